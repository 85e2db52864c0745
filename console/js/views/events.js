// Events: the organisation's events, oldest first, filtered by status, type and creation time
// (`GET /api/inbox`), a page at a time.

import { api, query } from '../api.js';
import { h, time, statusBadge, announce } from '../dom.js';

export const title = 'Events';

const PAGE_SIZE = 50;
const STATUSES = [
  ['', 'All statuses'],
  ['pending', 'Pending (waiting or retrying)'],
  ['delivered', 'Delivered'],
  ['failed', 'Failed (dead letter)'],
];
/** Presets of the time filter: value in the URL, label, how far back in milliseconds. */
const PERIODS = [
  ['', 'Any time', 0],
  ['1h', 'Last hour', 3_600_000],
  ['24h', 'Last 24 hours', 86_400_000],
  ['7d', 'Last 7 days', 604_800_000],
];

/** The filters of a `#/events?...` address, each valid or empty. */
export function filtersOf(search) {
  const status = search.get('status') ?? '';
  const since = search.get('since') ?? '';
  return {
    status: STATUSES.some(([v]) => v === status) ? status : '',
    type: (search.get('type') ?? '').trim(),
    since: PERIODS.some(([v]) => v === since) ? since : '',
  };
}

export async function render({ search, navigate }) {
  const filters = filtersOf(search);
  const period = PERIODS.find(([v]) => v === filters.since);
  const request = {
    status: filters.status,
    type: filters.type,
    since: period[2] ? new Date(Date.now() - period[2]).toISOString() : '',
    limit: PAGE_SIZE,
  };
  const page = await api(`/api/inbox${query(request)}`);

  const body = h('tbody', {});
  const more = h('button', { type: 'button', id: 'load-more' }, 'Load more events');
  let cursor = page.next_cursor;
  let shown = 0;
  const summary = h('p', { id: 'events-summary', class: 'summary' });

  function addRows(events) {
    for (const event of events) body.append(row(event));
    shown += events.length;
    summary.textContent = page.pagination.total === null || page.pagination.total === undefined
      ? `${shown} ${shown === 1 ? 'event' : 'events'} shown`
      : `${shown} of ${page.pagination.total} ${page.pagination.total === 1 ? 'event' : 'events'} shown`;
  }
  addRows(page.events);
  more.hidden = !cursor;
  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const next = await api(`/api/inbox${query({ ...request, cursor })}`);
      addRows(next.events);
      cursor = next.next_cursor;
      more.hidden = !cursor;
      announce(`${next.events.length} more events loaded.`);
    } finally {
      more.disabled = false;
    }
  });

  const table = h('table', { class: 'data', id: 'events-table' },
    h('caption', { class: 'visually-hidden' }, 'Events, oldest first'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Created'),
      h('th', { scope: 'col' }, 'Type'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'num' }, 'Attempts'),
      h('th', { scope: 'col' }, 'Last response'))),
    body);

  return h('section', { 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Events'),
    filterForm(filters, navigate),
    summary,
    page.events.length
      ? [h('div', { class: 'table-scroll' }, table), more]
      : h('p', { class: 'empty', id: 'events-empty' }, 'No events match these filters.'));
}

function row(event) {
  return h('tr', { 'data-event-id': event.id },
    h('td', {}, time(event.created_at)),
    h('td', {}, h('a', { href: `#/events/${event.id}`, class: 'event-link' },
      event.type, h('span', { class: 'visually-hidden' }, `, event ${event.id}`))),
    h('td', {}, statusBadge(event.status)),
    h('td', { class: 'num' }, String(event.attempts)),
    h('td', {}, lastResponse(event)));
}

function lastResponse(event) {
  if (event.response_status) return h('span', { class: 'code' }, `HTTP ${event.response_status}`);
  if (event.last_error) return h('span', { class: 'error-text' }, event.last_error);
  return h('span', { class: 'muted' }, '–');
}

function filterForm(filters, navigate) {
  const status = select('filter-status', STATUSES, filters.status);
  const since = select('filter-since', PERIODS, filters.since);
  const type = h('input', {
    id: 'filter-type', name: 'type', type: 'text', value: filters.type, autocomplete: 'off',
    spellcheck: 'false', placeholder: 'e.g. order.created', 'aria-describedby': 'filter-type-hint',
  });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter events' },
    field('filter-status', 'Status', status),
    field('filter-type', 'Event type', type,
      h('span', { id: 'filter-type-hint', class: 'hint' }, 'The exact type')),
    field('filter-since', 'Created', since),
    h('div', { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply filters'),
      h('a', { href: '#/events', class: 'button-link' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    navigate(`#/events${query({ status: status.value, type: type.value.trim(), since: since.value })}`);
  });
  return form;
}

function select(id, options, chosen) {
  const el = h('select', { id, name: id.replace('filter-', '') },
    options.map(([value, label]) => h('option', { value, selected: value === chosen }, label)));
  el.value = chosen;
  return el;
}

function field(id, label, control, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint);
}

