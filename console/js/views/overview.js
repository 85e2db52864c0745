// Overview: each endpoint's last 24 hours (deliveries by outcome as a chart, attempt latency
// p50/p95, from `GET /api/endpoints/{id}/stats`), the organisation's backlog (`GET /api/inbox`
// counted per status) and the organisation itself (`GET /api/keys`).

import { api, query } from '../api.js';
import { h, time, duration } from '../dom.js';
import { listEndpoints, endpointName, stateBadge } from '../endpoints.js';
import { outcomeChart, legend, OUTCOMES } from '../chart.js';

export const title = 'Overview';

const BACKLOG = [
  ['pending', 'Pending', 'Waiting for delivery, or for a retry'],
  ['failed', 'Failed', 'Retries exhausted: the dead letter queue'],
  ['delivered', 'Delivered', 'Delivered, or acknowledged'],
];

export async function render() {
  const [org, endpoints, ...counts] = await Promise.all([
    api('/api/keys'),
    listEndpoints(),
    ...BACKLOG.map(([status]) => api(`/api/inbox${query({ status, limit: 1 })}`)),
  ]);
  const stats = await Promise.all(endpoints.map((e) => api(`/api/endpoints/${e.id}/stats`)));
  const oldestPending = counts[0].events[0];

  return h('section', { 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Overview'),
    endpointsSection(endpoints, stats),
    h('section', { 'aria-labelledby': 'backlog-title' },
      h('h2', { id: 'backlog-title' }, 'Backlog'),
      h('ul', { class: 'stats', id: 'backlog' }, BACKLOG.map(([status, label, meaning], i) =>
        h('li', { class: `stat stat-${status}` },
          h('a', { href: `#/events${query({ status })}`, 'aria-describedby': `stat-${status}-meaning` },
            h('span', { class: 'stat-number', id: `stat-${status}` }, String(counts[i].pagination.total)),
            h('span', { class: 'stat-label' }, ` ${label}`)),
          h('span', { class: 'hint', id: `stat-${status}-meaning` }, meaning)))),
      h('p', { id: 'oldest-pending' }, oldestPending
        ? ['Oldest pending event: created ', time(oldestPending.created_at), '.']
        : 'Nothing is waiting.')),
    h('section', { 'aria-labelledby': 'org-title' },
      h('h2', { id: 'org-title' }, 'Organisation'),
      h('dl', { class: 'summary-list', id: 'organization' },
        entry('Name', org.organization_name),
        entry('Id', h('code', {}, org.organization_id)),
        entry('Tier', org.tier),
        entry('Rate limit', `${org.rate_limit_per_minute.toLocaleString()} events per minute`),
        entry('Webhook', org.webhook_url ? h('code', {}, org.webhook_url) : 'None: events wait in the inbox'),
        entry('API key prefix', h('code', {}, org.key_prefix)))));
}

function entry(term, value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, value));
}

/** Per endpoint: deliveries by outcome (chart and table) and attempt latency, last 24 hours. */
function endpointsSection(endpoints, stats) {
  const heading = h('h2', { id: 'endpoints-title' }, 'Endpoints, last 24 hours');
  if (endpoints.length === 0) {
    return h('section', { 'aria-labelledby': 'endpoints-title' }, heading,
      h('p', { class: 'empty' }, 'No endpoint yet: ', h('a', { href: '#/endpoints/new' }, 'create one'), '.'));
  }
  const rows = endpoints.map((e, i) => ({ label: endpointName(e), counts: stats[i].deliveries }));
  const ms = (value) => (value === null || value === undefined ? '–' : duration(Math.round(value)));
  return h('section', { 'aria-labelledby': 'endpoints-title' },
    heading,
    h('figure', { class: 'card chart-card' },
      outcomeChart('outcome-chart', rows),
      legend(),
      h('figcaption', { class: 'hint' }, 'Deliveries created in the last 24 hours, by their outcome now.')),
    h('div', { class: 'table-scroll' }, h('table', { class: 'data', id: 'endpoint-stats' },
      h('caption', { class: 'visually-hidden' }, 'Deliveries by outcome and attempt latency per endpoint, last 24 hours'),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Endpoint'),
        h('th', { scope: 'col' }, 'State'),
        OUTCOMES.map((o) => h('th', { scope: 'col', class: 'num' }, o[0].toUpperCase() + o.slice(1))),
        h('th', { scope: 'col', class: 'num' }, 'Attempts'),
        h('th', { scope: 'col', class: 'num' }, 'p50'),
        h('th', { scope: 'col', class: 'num' }, 'p95'))),
      h('tbody', {}, endpoints.map((e, i) => h('tr', { 'data-endpoint-id': e.id },
        h('th', { scope: 'row' }, h('a', { href: `#/endpoints/${e.id}` }, endpointName(e))),
        h('td', {}, stateBadge(e)),
        OUTCOMES.map((o) => h('td', { class: `num count-${o}` }, String(stats[i].deliveries[o]))),
        h('td', { class: 'num' }, String(stats[i].attempts.count)),
        h('td', { class: 'num p50' }, ms(stats[i].attempts.duration_ms.p50)),
        h('td', { class: 'num p95' }, ms(stats[i].attempts.duration_ms.p95))))))));
}
