// One endpoint: its settings, its newest deliveries, and what can be done to it (edit, enable
// or disable, rotate its secret with a grace period, send a test event, recover, delete).

import { api, ApiError, query } from '../api.js';
import { h, time, statusBadge, errorBox, announce, field, actionDialog } from '../dom.js';
import { endpointName, stateBadge, testTypeFor, showSecretOnce } from '../endpoints.js';
import { readOnlyNote } from './endpoints.js';

export const title = 'Endpoint';

/** Grace periods offered when rotating a secret: seconds, label. */
const GRACE = [
  [0, 'None: the current secret stops at once'],
  [3_600, '1 hour'],
  [86_400, '1 day (the default)'],
  [604_800, '7 days'],
];

export async function render({ params: [id], credential, refresh, navigate, notice }) {
  let endpoint;
  try {
    endpoint = await api(`/api/endpoints/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return notFound();
    throw error;
  }
  const recent = await api(`/api/endpoints/${endpoint.id}/deliveries${query({ limit: 20 })}`);
  const readOnly = credential.readOnly;
  const result = h('div', { id: 'action-result', class: 'action-result', role: 'status' }, notice);

  const button = (buttonId, label, onclick, extra = {}) => h('button', {
    type: 'button', id: buttonId, disabled: readOnly, onclick,
    'aria-describedby': readOnly ? 'read-only-note' : null, ...extra,
  }, label);

  async function toggle() {
    const enable = !endpoint.enabled;
    try {
      await api(`/api/endpoints/${endpoint.id}`, { method: 'PATCH', body: { enabled: enable } });
      const said = enable ? 'Endpoint enabled.' : 'Endpoint disabled: its new deliveries are skipped.';
      refresh({ focus: 'toggle-button', message: said, notice: said });
    } catch (error) {
      result.replaceChildren(errorBox(error.message));
    }
  }

  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions on this endpoint' },
    readOnly
      ? button('edit-button', 'Edit')
      : h('a', { href: `#/endpoints/${endpoint.id}/edit`, id: 'edit-button', class: 'button-link' }, 'Edit'),
    button('toggle-button', endpoint.enabled ? 'Disable' : 'Enable', toggle),
    button('rotate-button', 'Rotate secret', () => rotate(endpoint, result)),
    button('test-button', 'Send test event', () => sendTest(endpoint, result)),
    h('a', { href: `#/recovery${query({ endpoint: endpoint.id })}`, class: 'button-link', id: 'recover-link' }, 'Recover deliveries'),
    button('delete-button', 'Delete', () => remove(endpoint, navigate), { class: 'danger' }));

  return h('article', { 'aria-labelledby': 'page-title' },
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/endpoints' }, '← Endpoints')),
    h('h1', { id: 'page-title', tabindex: '-1' }, endpointName(endpoint)),
    actions,
    readOnly && readOnlyNote(),
    result,
    h('dl', { class: 'summary-list', id: 'endpoint-summary' },
      entry('URL', h('code', {}, endpoint.url)),
      entry('State', stateBadge(endpoint)),
      entry('Event types', endpoint.event_types.map((p) => h('code', { class: 'pattern' }, p))),
      entry('Headers', Object.keys(endpoint.headers).length
        ? Object.entries(endpoint.headers).map(([k, v]) => h('div', {}, h('code', {}, `${k}: ${v}`)))
        : h('span', { class: 'muted' }, 'None')),
      entry('Rate limit', endpoint.rate_limit_per_second ? `${endpoint.rate_limit_per_second} per second` : 'None'),
      entry('Created', time(endpoint.created_at))),
    h('section', { 'aria-labelledby': 'recent-title' },
      h('h2', { id: 'recent-title' }, 'Newest deliveries'),
      recent.deliveries.length ? deliveries(recent.deliveries)
        : h('p', { class: 'empty', id: 'deliveries-empty' }, 'No delivery yet.')));
}

function deliveries(list) {
  return h('div', { class: 'table-scroll' }, h('table', { class: 'data', id: 'endpoint-deliveries' },
    h('caption', { class: 'visually-hidden' }, 'Newest deliveries first'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Event'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'num' }, 'Attempts'),
      h('th', { scope: 'col' }, 'Last response'),
      h('th', { scope: 'col' }, 'Next attempt'))),
    h('tbody', {}, list.map((d) => h('tr', {},
      h('td', {}, h('a', { href: `#/events/${d.event_id}` }, d.type), h('div', { class: 'hint' }, time(d.created_at))),
      h('td', {}, statusBadge(d.status)),
      h('td', { class: 'num' }, String(d.attempts)),
      h('td', {}, d.response_status ? `HTTP ${d.response_status}` : h('span', { class: 'error-text' }, d.last_error ?? '')),
      h('td', {}, time(d.next_attempt_at)))))));
}

function rotate(endpoint, result) {
  const grace = h('select', { id: 'grace-period' },
    GRACE.map(([seconds, label]) => h('option', { value: String(seconds), selected: seconds === 86_400 }, label)));
  actionDialog('rotate-dialog', 'Rotate the signing secret', {
    content: [
      h('p', {}, 'A new secret signs every delivery from now on. During the grace period the current one signs too, so receivers can switch without losing a delivery.'),
      field('Grace period', grace),
    ],
    confirmId: 'rotate-confirm',
    label: 'Rotate',
    async run() {
      const rotated = await api(`/api/endpoints/${endpoint.id}/secret/rotate`,
        { method: 'POST', body: { grace_period_seconds: Number(grace.value) } });
      return () => {
        const until = rotated.previous_secret_expires_at;
        result.replaceChildren('Secret rotated. The previous secret is valid until ', time(until), '.');
        announce(`Secret rotated. The previous secret is valid until ${new Date(until).toLocaleString()}.`);
        showSecretOnce(rotated.signing_secret, 'The new secret signs this endpoint\'s deliveries from now on.', () => {});
      };
    },
  });
}

/** A test event through `POST /api/events`: delivered, like any event, to every matching endpoint. */
function sendTest(endpoint, result) {
  const type = h('input', { id: 'test-type', type: 'text', value: testTypeFor(endpoint), spellcheck: 'false', autocomplete: 'off' });
  actionDialog('test-dialog', 'Send a test event', {
    content: field('Event type', type,
      'A type this endpoint\'s filter takes. The event is a real one: every endpoint whose filter matches it gets it too.'),
    confirmId: 'test-confirm',
    label: 'Send',
    async run() {
      const sent = await api('/api/events', {
        method: 'POST',
        body: { type: type.value.trim(), payload: { test: true, sent_from: 'console', endpoint_id: endpoint.id } },
      });
      return () => {
        result.replaceChildren('Test event sent: ', h('a', { href: `#/events/${sent.id}`, id: 'test-event-link' }, `${sent.type} ${sent.id}`));
        announce('Test event sent.');
      };
    },
  });
}

function remove(endpoint, navigate) {
  actionDialog('delete-dialog', 'Delete this endpoint?', {
    content: h('p', {}, h('code', {}, endpoint.url), ' gets nothing more: its pending deliveries are cancelled. This cannot be undone.'),
    confirmId: 'delete-confirm',
    label: 'Delete',
    danger: true,
    async run() {
      await api(`/api/endpoints/${endpoint.id}`, { method: 'DELETE' });
      return () => {
        announce('Endpoint deleted.');
        navigate('#/endpoints');
      };
    },
  });
}

function entry(term, value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, value));
}

function notFound() {
  return h('section', { 'aria-labelledby': 'page-title' },
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/endpoints' }, '← Endpoints')),
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Endpoint not found'),
    h('p', {}, 'No endpoint of this organisation has this id.'));
}
