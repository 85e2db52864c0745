// The sign-in page: paste an API key, or open a console link. Shown whenever the tab has no
// working credential, with the reason when one just stopped working; it shows no data.

import { api, ApiError } from '../api.js';
import { h } from '../dom.js';

/** Why the sign-in page is shown, as the person reads it. */
export const REASONS = {
  ended: 'Your session has ended: it expired or was revoked. Sign in again.',
  expired: 'Your session has expired. Sign in again.',
  key_refused: 'Your API key no longer works (it may have been rotated). Sign in again.',
  link_refused: 'This console link is invalid, expired or was already used. Ask for a new link, or sign in with an API key.',
  signed_out: 'You are signed out.',
};

/**
 * The page, as an element. `onSignedIn(credential)` is called once a pasted key has been
 * checked against the API.
 */
export function signInPage({ reason, onSignedIn }) {
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'api-key-help',
  });
  const problem = h('p', { id: 'api-key-problem', class: 'field-problem', hidden: true });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');

  async function submit(event) {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      showProblem('Paste an API key first.');
      return;
    }
    button.disabled = true;
    try {
      await api('/api/keys', { token: key });
      onSignedIn({ kind: 'api_key', token: key, readOnly: false });
    } catch (error) {
      showProblem(error instanceof ApiError && error.status === 401
        ? 'This API key was refused. Check that it is complete and still active.'
        : error.message);
      button.disabled = false;
    }
  }

  function showProblem(message) {
    problem.textContent = message;
    problem.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', 'api-key-problem api-key-help');
    input.focus();
  }

  return h('section', { class: 'signin', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Sign in to the console'),
    reason && h('p', { class: 'notice', role: 'alert', id: 'signin-reason' }, REASONS[reason] ?? reason),
    h('form', { class: 'card', onsubmit: submit, novalidate: true },
      h('label', { for: 'api-key' }, 'API key'),
      input,
      problem,
      h('p', { id: 'api-key-help', class: 'hint' },
        'The key stays in this browser tab only, and is forgotten when the tab closes.'),
      button),
    h('section', { class: 'card', 'aria-labelledby': 'link-title' },
      h('h2', { id: 'link-title' }, 'Or open a console link'),
      h('p', {}, 'A console link signs you in to one organisation without a key. It is created with ',
        h('code', {}, 'POST /api/portal/sessions'),
        ', works once, and expires.')));
}
