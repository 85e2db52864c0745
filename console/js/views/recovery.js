// Recovery: deliver again what an endpoint missed in a time window. Count first (a dry run of
// `POST /api/endpoints/{id}/recover`), then start it and watch its progress
// (`GET /api/endpoints/{id}/recoveries/{recovery_id}`, polled while it runs).

import { api, ApiError, query } from '../api.js';
import { h, field, errorBox, announce, showProblems, time, replaceChildren } from '../dom.js';
import { listEndpoints, endpointName } from '../endpoints.js';
import { readOnlyNote } from './endpoints.js';

export const title = 'Recovery';

/** Windows offered: value, label, milliseconds back from now (0: the custom fields). */
const WINDOWS = [
  ['1h', 'Last hour', 3_600_000],
  ['24h', 'Last 24 hours', 86_400_000],
  ['7d', 'Last 7 days', 604_800_000],
  ['custom', 'Custom…', 0],
];
const STATUSES = [
  ['failed', 'Failed (retries exhausted)', true],
  ['skipped', 'Skipped (endpoint was disabled)', true],
  ['cancelled', 'Cancelled', false],
  ['delivered', 'Delivered (send again)', false],
];
/** How often a running recovery is read again. */
const POLL_MS = 1000;

export async function render({ search, credential, navigate }) {
  const endpoints = await listEndpoints();
  const chosen = search.get('endpoint') ?? endpoints[0]?.id ?? '';
  const recoveryId = search.get('recovery');
  const heading = h('h1', { id: 'page-title', tabindex: '-1' }, 'Recovery');
  if (endpoints.length === 0) {
    return h('section', { 'aria-labelledby': 'page-title' }, heading,
      h('p', { class: 'empty' }, 'No endpoint yet: nothing to recover.'));
  }

  const endpoint = h('select', { id: 'recovery-endpoint' },
    endpoints.map((e) => h('option', { value: e.id, selected: e.id === chosen }, endpointName(e))));
  const windowSelect = h('select', { id: 'recovery-window' },
    WINDOWS.map(([value, label]) => h('option', { value, selected: value === '24h' }, label)));
  const from = h('input', { id: 'recovery-since', type: 'datetime-local', step: '1' });
  const to = h('input', { id: 'recovery-until', type: 'datetime-local', step: '1' });
  const custom = h('div', { class: 'custom-window', hidden: true },
    field('From', from), field('To (empty: now)', to));
  windowSelect.addEventListener('change', () => { custom.hidden = windowSelect.value !== 'custom'; });
  const boxes = STATUSES.map(([value, label, checked]) =>
    h('div', { class: 'field-check' },
      h('input', { type: 'checkbox', id: `recovery-status-${value}`, value, checked }),
      h('label', { for: `recovery-status-${value}` }, label)));
  const statuses = h('fieldset', { id: 'recovery-statuses', class: 'statuses' },
    h('legend', {}, 'Deliveries that are'), boxes,
    h('p', { id: 'recovery-statuses-problem', class: 'field-problem', hidden: true }));

  const count = h('p', { id: 'dry-run-count', class: 'dry-run', role: 'status' });
  const problem = h('div', { id: 'recovery-problem' });
  const dryRun = h('button', { type: 'submit', id: 'dry-run-button', disabled: credential.readOnly,
    'aria-describedby': credential.readOnly ? 'read-only-note' : null }, 'Count matching deliveries');
  const start = h('button', { type: 'button', id: 'start-recovery', class: 'primary', disabled: true,
    'aria-describedby': 'dry-run-count' }, 'Start recovery');
  /** The request last counted: starting sends exactly it. */
  let counted = null;

  const form = h('form', { class: 'card recovery-form', novalidate: true, 'aria-label': 'Recovery' },
    field('Endpoint', endpoint),
    field('Deliveries created', windowSelect),
    custom,
    statuses,
    problem,
    h('div', { class: 'actions' }, dryRun, start),
    count);
  // Any change makes the count stale.
  form.addEventListener('change', () => {
    counted = null;
    start.disabled = true;
    count.textContent = '';
  });

  function request() {
    const preset = WINDOWS.find(([v]) => v === windowSelect.value);
    const now = Date.now();
    const since = preset[2] ? new Date(now - preset[2]) : from.value ? new Date(from.value) : null;
    const until = preset[2] || !to.value ? null : new Date(to.value);
    return {
      endpoint: endpoint.value,
      body: {
        since: since ? since.toISOString() : '',
        ...(until ? { until: until.toISOString() } : {}),
        statuses: boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
      },
    };
  }

  async function send(wanted, dry) {
    problem.replaceChildren();
    return api(`/api/endpoints/${wanted.endpoint}/recover`, { method: 'POST', body: { ...wanted.body, dry_run: dry } })
      .catch((error) => {
        const left = error instanceof ApiError && error.code === 'validation_failed'
          ? showProblems(form, error.body.details, { since: 'recovery-since', until: 'recovery-until', statuses: 'recovery-statuses' })
          : [error.message];
        if (left.length) problem.replaceChildren(errorBox(left.join(' ')));
        return null;
      });
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const wanted = request();
    dryRun.disabled = true;
    const answer = await send(wanted, true);
    dryRun.disabled = false;
    if (!answer) return;
    counted = answer.count > 0 ? wanted : null;
    start.disabled = !counted;
    count.textContent = answer.count === 1 ? '1 delivery matches.' : `${answer.count} deliveries match.`;
    announce(count.textContent);
  });
  start.addEventListener('click', async () => {
    if (!counted) return;
    start.disabled = true;
    const started = await send(counted, false);
    if (started) navigate(`#/recovery${query({ endpoint: counted.endpoint, recovery: started.recovery_id })}`);
    else start.disabled = false;
  });

  return h('section', { 'aria-labelledby': 'page-title' },
    heading,
    recoveryId && await progress(chosen, recoveryId),
    h('p', {}, 'Give the deliveries an endpoint missed a new chain of attempts: count them first, then start.'),
    credential.readOnly && readOnlyNote(),
    form);
}

/** A recovery's progress, read again every second while it runs and the page shows it. */
async function progress(endpointId, recoveryId) {
  const path = `/api/endpoints/${encodeURIComponent(endpointId)}/recoveries/${encodeURIComponent(recoveryId)}`;
  const bar = h('progress', { id: 'recovery-progress', max: '1', value: '0', 'aria-labelledby': 'progress-title' });
  const words = h('p', { id: 'recovery-status', role: 'status' });
  const scope = h('p', { class: 'hint', id: 'recovery-scope' });
  const section = h('section', { 'aria-labelledby': 'progress-title', class: 'card', id: 'recovery' },
    h('h2', { id: 'progress-title' }, 'This recovery'), scope, bar, words);

  function show(recovery) {
    bar.max = Math.max(recovery.total, 1);
    bar.value = recovery.status === 'done' && recovery.total === 0 ? 1 : recovery.enqueued;
    replaceChildren(words, `${recovery.status === 'done' ? 'Done' : 'Running'}: ${recovery.enqueued} of ${recovery.total} deliveries restarted`,
      recovery.finished_at ? [' (finished ', time(recovery.finished_at), ').'] : '.');
    replaceChildren(scope, 'Deliveries created between ', time(recovery.since), ' and ', time(recovery.until),
      ` that were ${recovery.statuses.join(' or ')}.`);
  }
  async function poll() {
    if (!section.isConnected) return;
    try {
      const recovery = await api(path);
      show(recovery);
      if (recovery.status === 'done') announce('Recovery done.');
      else setTimeout(poll, POLL_MS);
    } catch (error) {
      words.replaceChildren(errorBox(error.message));
    }
  }
  try {
    const recovery = await api(path);
    show(recovery);
    if (recovery.status !== 'done') setTimeout(poll, POLL_MS);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    words.textContent = 'This endpoint has no such recovery.';
  }
  return section;
}
