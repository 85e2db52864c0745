// Endpoints: where the organisation's events go, each with its filter, its state and how its
// latest delivery ended (`GET /api/endpoints`, and each one's newest delivery).

import { api, query } from '../api.js';
import { h, time, statusBadge } from '../dom.js';
import { listEndpoints, endpointName, stateBadge } from '../endpoints.js';

export const title = 'Endpoints';

export async function render({ credential }) {
  const endpoints = await listEndpoints();
  const latest = await Promise.all(endpoints.map((e) =>
    api(`/api/endpoints/${e.id}/deliveries${query({ limit: 1 })}`).then((page) => page.deliveries[0])));

  const table = h('table', { class: 'data', id: 'endpoints-table' },
    h('caption', { class: 'visually-hidden' }, 'Endpoints, oldest first'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Endpoint'),
      h('th', { scope: 'col' }, 'Event types'),
      h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col' }, 'Last delivery'))),
    h('tbody', {}, endpoints.map((endpoint, i) => h('tr', { 'data-endpoint-id': endpoint.id },
      h('td', {},
        h('a', { href: `#/endpoints/${endpoint.id}`, class: 'endpoint-link' }, endpointName(endpoint)),
        endpoint.default && [' ', h('span', { class: 'badge badge-skipped', title: 'The webhook that /api/webhook/config manages' }, 'default')],
        endpoint.description && h('div', { class: 'hint' }, h('code', {}, endpoint.url))),
      h('td', {}, endpoint.event_types.map((p) => h('code', { class: 'pattern' }, p))),
      h('td', {}, stateBadge(endpoint)),
      h('td', { class: 'last-result' }, lastResult(latest[i]))))));

  return h('section', { 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Endpoints'),
    h('div', { class: 'actions' },
      credential.readOnly
        ? h('button', { type: 'button', id: 'new-endpoint', disabled: true, 'aria-describedby': 'read-only-note' }, 'New endpoint')
        : h('a', { href: '#/endpoints/new', id: 'new-endpoint', class: 'button-link primary' }, 'New endpoint')),
    credential.readOnly && readOnlyNote(),
    endpoints.length
      ? h('div', { class: 'table-scroll' }, table)
      : h('p', { class: 'empty', id: 'endpoints-empty' }, 'No endpoint yet: events wait in the inbox.'));
}

/** The newest delivery's status, its answer and when. */
export function lastResult(delivery) {
  if (!delivery) return h('span', { class: 'muted' }, 'None yet');
  const answer = delivery.response_status
    ? `HTTP ${delivery.response_status}`
    : delivery.last_error;
  return [statusBadge(delivery.status), ' ',
    answer && h('span', { class: delivery.status === 'delivered' ? 'code' : 'error-text' }, answer),
    h('div', { class: 'hint' }, delivery.type, ' · ', time(delivery.delivered_at ?? delivery.created_at))];
}

export function readOnlyNote() {
  return h('p', { id: 'read-only-note', class: 'hint' },
    'This session is read-only: it can look at everything but change nothing.');
}
