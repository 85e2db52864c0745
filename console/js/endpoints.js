// What several views need to know of endpoints: the organisation's list, each one's name as a
// person reads it, and its state in words.

import { api, query } from './api.js';
import { h, openDialog } from './dom.js';

/** Every endpoint of the organisation (all pages of `GET /api/endpoints`). */
export async function listEndpoints() {
  const all = [];
  let cursor;
  do {
    const page = await api(`/api/endpoints${query({ limit: 100, cursor })}`);
    all.push(...page.endpoints);
    cursor = page.next_cursor;
  } while (cursor);
  return all;
}

/** The endpoint's description, or its URL without one. */
export function endpointName(endpoint) {
  return endpoint?.description || endpoint?.url || 'Deleted endpoint';
}

/** `enabled`, `disabled (manual)` or `disabled (failing)`, as a badge. */
export function stateBadge(endpoint) {
  if (endpoint.enabled) return h('span', { class: 'badge badge-delivered' }, 'enabled');
  const reason = endpoint.disabled_reason === 'failing' ? 'failing' : 'manual';
  return h('span', { class: `badge badge-${reason === 'failing' ? 'failed' : 'skipped'}` }, `disabled (${reason})`);
}

/** An event type this endpoint's filter takes, for a test event: `order.test` for `order.*`. */
export function testTypeFor(endpoint) {
  const pattern = endpoint.event_types.find((p) => p !== '*') ?? '*';
  if (pattern === '*') return 'triggers.test';
  return pattern.endsWith('.*') ? `${pattern.slice(0, -2)}.test` : pattern;
}

/**
 * Show a signing secret once, in a dialog: the person copies it now, the API never shows it
 * again. `onClose` runs when the dialog is closed.
 */
export function showSecretOnce(secret, explanation, onClose) {
  const dialog = openDialog('secret-dialog', 'Signing secret', (close) => {
    const value = h('input', {
      id: 'new-secret', type: 'text', readonly: true, value: secret, spellcheck: 'false',
      class: 'secret', 'aria-describedby': 'new-secret-hint',
    });
    value.addEventListener('focus', () => value.select());
    return [
      h('label', { for: 'new-secret' }, 'New signing secret'),
      value,
      h('p', { id: 'new-secret-hint', class: 'hint' }, explanation,
        ' It is shown only now: copy it into your receiver before closing.'),
      h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', id: 'secret-done', onclick: close }, 'Done')),
    ];
  });
  dialog.addEventListener('close', onClose);
  dialog.querySelector('#new-secret').focus();
}
