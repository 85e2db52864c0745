// Overview: the organisation, where its events go, and its backlog, as far as the API tells
// (`GET /api/keys`, and `GET /api/inbox` counted per status).

import { api, query } from '../api.js';
import { h, time } from '../dom.js';

export const title = 'Overview';

const BACKLOG = [
  ['pending', 'Pending', 'Waiting for delivery, or for a retry'],
  ['failed', 'Failed', 'Retries exhausted: the dead letter queue'],
  ['delivered', 'Delivered', 'Delivered, or acknowledged'],
];

export async function render() {
  const [org, ...counts] = await Promise.all([
    api('/api/keys'),
    ...BACKLOG.map(([status]) => api(`/api/inbox${query({ status, limit: 1 })}`)),
  ]);
  const oldestPending = counts[0].events[0];

  return h('section', { 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Overview'),
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
