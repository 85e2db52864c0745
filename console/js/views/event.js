// One event: its summary, its delivery to each endpoint with that delivery's attempts on a
// timeline, its payload, and the actions on it (acknowledge, redeliver all, resend one delivery),
// from `GET /api/events/{id}`.

import { api, ApiError } from '../api.js';
import { h, time, duration, statusBadge, announce, errorBox } from '../dom.js';
import { listEndpoints, endpointName } from '../endpoints.js';

export const title = 'Event';

export async function render({ params: [id], credential, refresh, backHref, notice }) {
  let event;
  let endpoints;
  try {
    [event, endpoints] = await Promise.all([api(`/api/events/${encodeURIComponent(id)}`), listEndpoints()]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return notFound(backHref);
    throw error;
  }
  // What the last action did (also announced by the page), or why it failed.
  const result = h('p', { id: 'action-result', class: 'action-result' }, notice);
  const readOnly = credential.readOnly;

  async function act(button, call, done) {
    button.disabled = true;
    result.textContent = '';
    try {
      const answer = await call();
      await refresh({ focus: button.id, message: done(answer), notice: done(answer) });
    } catch (error) {
      result.replaceChildren(errorBox(error.message));
      button.disabled = false;
    }
  }

  const acknowledged = Boolean(event.acknowledged_at);
  const ack = h('button', {
    type: 'button', id: 'ack-button', class: 'primary',
    disabled: readOnly || acknowledged,
    'aria-describedby': readOnly ? 'read-only-note' : null,
  }, acknowledged ? 'Acknowledged' : 'Acknowledge');
  ack.addEventListener('click', () => act(ack,
    () => api(`/api/ack/${event.id}`, { method: 'POST' }),
    (answer) => answer.message === 'event was already acknowledged'
      ? 'The event was already acknowledged.' : 'Event acknowledged.'));

  const redeliver = h('button', {
    type: 'button', id: 'redeliver-button',
    disabled: readOnly,
    'aria-describedby': readOnly ? 'read-only-note' : null,
  }, 'Redeliver');
  redeliver.addEventListener('click', () => act(redeliver,
    () => api(`/api/events/${event.id}/redeliver`, { method: 'POST' }),
    (answer) => answer.message === 'delivery already pending'
      ? 'A delivery is already pending.' : 'Redelivery enqueued.'));

  const reload = h('button', { type: 'button', id: 'refresh-button' }, 'Refresh');
  reload.addEventListener('click', () => refresh({ focus: 'refresh-button', message: 'Event reloaded.' }));

  return h('article', { 'aria-labelledby': 'page-title', class: 'event' },
    h('p', { class: 'breadcrumb' }, h('a', { href: backHref }, '← Events')),
    h('h1', { id: 'page-title', tabindex: '-1' }, event.type),
    h('p', { class: 'muted' }, 'Event ', h('code', { id: 'event-id' }, event.id)),
    h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions on this event' },
      ack, redeliver, reload),
    readOnly && h('p', { id: 'read-only-note', class: 'hint' },
      'This session is read-only: it can look at everything but change nothing.'),
    result,
    summary(event),
    deliveriesOf(event, endpoints, readOnly, act),
    h('section', { 'aria-labelledby': 'payload-title' },
      h('h2', { id: 'payload-title' }, 'Payload'),
      h('pre', { class: 'payload', id: 'payload', tabindex: '0', 'aria-labelledby': 'payload-title' },
        JSON.stringify(event.payload, null, 2))));
}

function summary(event) {
  const rows = [
    ['Status', statusBadge(event.status)],
    ['Attempts', String(event.attempts)],
    ['Created', time(event.created_at)],
    ['Delivered', time(event.delivered_at)],
    ['Acknowledged', time(event.acknowledged_at)],
    ['Dedup id', event.dedup_id ? h('code', {}, event.dedup_id) : h('span', { class: 'muted' }, '–')],
    ['Last error', event.last_error ? h('span', { class: 'error-text' }, event.last_error) : h('span', { class: 'muted' }, '–')],
  ];
  return h('dl', { class: 'summary-list', id: 'event-summary' },
    rows.map(([term, value]) => h('div', {}, h('dt', {}, term), h('dd', {}, value))));
}

/**
 * Each endpoint's delivery of the event: its status, when it is tried next, a button to resend
 * it, and its attempts on a timeline. An event without deliveries shows its attempts alone.
 */
function deliveriesOf(event, endpoints, readOnly, act) {
  const attempts = event.attempts_log ?? [];
  const list = Array.isArray(event.deliveries) ? event.deliveries : [];
  if (list.length === 0) {
    return h('section', { 'aria-labelledby': 'attempts-title' },
      h('h2', { id: 'attempts-title' }, 'Delivery attempts'),
      timeline(attempts, 'attempts'));
  }
  const byId = new Map(endpoints.map((e) => [e.id, e]));
  return h('section', { 'aria-labelledby': 'deliveries-title', id: 'deliveries' },
    h('h2', { id: 'deliveries-title' }, `Deliveries (${list.length})`),
    list.map((d) => {
      const endpoint = byId.get(d.endpoint_id);
      const titleId = `delivery-${d.endpoint_id}-title`;
      const resend = h('button', {
        type: 'button', id: `resend-${d.endpoint_id}`, class: 'resend-button', disabled: readOnly,
        'aria-describedby': readOnly ? 'read-only-note' : titleId,
      }, 'Resend');
      resend.addEventListener('click', () => act(resend,
        () => api(`/api/events/${event.id}/endpoints/${d.endpoint_id}/resend`, { method: 'POST' }),
        () => `Resend to ${endpointName(endpoint)} enqueued.`));
      return h('section', { class: 'delivery card', 'aria-labelledby': titleId, 'data-endpoint-id': d.endpoint_id },
        h('h3', { id: titleId },
          endpoint ? h('a', { href: `#/endpoints/${d.endpoint_id}` }, endpointName(endpoint)) : `Deleted endpoint ${d.endpoint_id}`),
        h('p', { class: 'delivery-state' }, statusBadge(d.status),
          ` · ${d.attempts} ${d.attempts === 1 ? 'attempt' : 'attempts'}`,
          d.status === 'pending' && d.next_attempt_at
            ? h('span', { class: 'next-attempt' }, ' · next attempt ', time(d.next_attempt_at), ` (${untilText(d.next_attempt_at)})`)
            : null,
          d.delivered_at ? [' · delivered ', time(d.delivered_at)] : null),
        h('div', { class: 'actions' }, resend),
        timeline(attempts.filter((a) => a.endpoint_id === d.endpoint_id), `attempts-${d.endpoint_id}`));
    }));
}

/** `in 12 s`, `in 3 min`, `due now`. */
function untilText(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (seconds <= 0) return 'due now';
  return seconds < 120 ? `in ${seconds} s` : `in ${Math.round(seconds / 60)} min`;
}

/** The attempts, first to last: when, how it ended (HTTP status or error) and how long it took. */
function timeline(attempts, id) {
  if (attempts.length === 0) {
    return h('p', { class: 'empty attempts-empty', id: `${id}-empty` }, 'No delivery attempt yet.');
  }
  const sorted = [...attempts].sort((a, b) => a.started_at.localeCompare(b.started_at) || a.attempt - b.attempt);
  return h('ol', { class: 'timeline', id, 'aria-label': 'Attempts, first to last' }, sorted.map((a) => {
    const ok = a.response_status >= 200 && a.response_status < 300;
    const outcome = a.response_status
      ? `HTTP ${a.response_status}`
      : 'No response';
    return h('li', { class: `attempt ${ok ? 'attempt-ok' : 'attempt-failed'}` },
      h('span', { class: 'attempt-marker', 'aria-hidden': 'true' }),
      h('div', { class: 'attempt-body' },
        h('p', { class: 'attempt-title' },
          h('span', { class: 'attempt-number' }, `Attempt ${a.attempt}`), ' · ',
          h('strong', { class: 'attempt-outcome' }, ok ? `${outcome} (success)` : `${outcome} (failed)`)),
        h('p', { class: 'attempt-meta' }, time(a.started_at), ` · took ${duration(a.duration_ms)}`,
),
        a.error && h('p', { class: 'attempt-error error-text' }, a.error)));
  }));
}

function notFound(backHref) {
  announce('Event not found.');
  return h('section', { 'aria-labelledby': 'page-title' },
    h('p', { class: 'breadcrumb' }, h('a', { href: backHref }, '← Events')),
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Event not found'),
    h('p', {}, 'No event of this organisation has this id.'));
}
