// Creating an endpoint (`POST /api/endpoints`) or changing one (`PATCH /api/endpoints/{id}`):
// its URL, description, event-type patterns, custom headers and rate limit. The API judges every
// field; its `422` answer is shown beside the fields it names.

import { api, ApiError } from '../api.js';
import { h, field, showProblems, errorBox, announce } from '../dom.js';
import { showSecretOnce, endpointName } from '../endpoints.js';

export const title = 'Endpoint';

/** The API's fields, and the controls that edit them. */
const FIELDS = {
  url: 'endpoint-url',
  description: 'endpoint-description',
  event_types: 'endpoint-event-types',
  headers: 'endpoint-headers',
  rate_limit_per_second: 'endpoint-rate-limit',
  body: 'endpoint-url',
};

export async function render({ params: [id], credential, navigate }) {
  const endpoint = id ? await api(`/api/endpoints/${encodeURIComponent(id)}`) : null;
  const heading = endpoint ? `Edit ${endpointName(endpoint)}` : 'New endpoint';
  const back = endpoint ? `#/endpoints/${endpoint.id}` : '#/endpoints';

  const url = h('input', { id: 'endpoint-url', type: 'text', inputmode: 'url', required: true, spellcheck: 'false',
    autocomplete: 'off', value: endpoint?.url ?? '', placeholder: 'e.g. the https address of your receiver' });
  const description = h('input', { id: 'endpoint-description', type: 'text', maxlength: '255',
    value: endpoint?.description ?? '' });
  const eventTypes = h('textarea', { id: 'endpoint-event-types', rows: '3', spellcheck: 'false' });
  eventTypes.value = (endpoint?.event_types ?? ['*']).join('\n');
  const headers = h('textarea', { id: 'endpoint-headers', rows: '3', spellcheck: 'false' });
  headers.value = Object.entries(endpoint?.headers ?? {}).map(([k, v]) => `${k}: ${v}`).join('\n');
  const rateLimit = h('input', { id: 'endpoint-rate-limit', type: 'number', min: '1', max: '10000', step: '1',
    value: endpoint?.rate_limit_per_second ?? '' });
  const enabled = h('input', { id: 'endpoint-enabled', type: 'checkbox', checked: endpoint ? null : true });
  const problem = h('div', { id: 'form-problem' });
  const save = h('button', { type: 'submit', class: 'primary', id: 'save-endpoint', disabled: credential.readOnly },
    endpoint ? 'Save changes' : 'Create endpoint');

  const form = h('form', { class: 'card endpoint-form', novalidate: true, 'aria-labelledby': 'page-title' },
    field('URL', url, 'Where deliveries are POSTed (https; http only where the operator allows it).'),
    field('Description', description, 'Optional: how people here recognise it.'),
    field('Event types', eventTypes, 'One pattern a line: * (every type), an exact type, or a prefix such as order.*'),
    field('Headers', headers, 'Optional: one "Name: value" a line, added to every delivery. ******** keeps a stored secret value.'),
    field('Rate limit (deliveries per second)', rateLimit, 'Optional: empty for none.'),
    !endpoint && h('div', { class: 'field field-check' }, enabled, h('label', { for: 'endpoint-enabled' }, 'Enabled')),
    problem,
    h('div', { class: 'actions' }, save, h('a', { href: back, class: 'button-link' }, 'Cancel')));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const parsed = parseHeaders(headers.value);
    if (parsed.problem) {
      showProblems(form, [{ field: 'headers', message: parsed.problem }], FIELDS);
      return;
    }
    const body = {
      url: url.value.trim(),
      description: description.value.trim(),
      event_types: eventTypes.value.split(/[\n,]/).map((p) => p.trim()).filter(Boolean),
      headers: parsed.headers,
      rate_limit_per_second: rateLimit.value === '' ? null : Number(rateLimit.value),
    };
    if (!endpoint) body.enabled = enabled.checked;
    save.disabled = true;
    try {
      const saved = await api(endpoint ? `/api/endpoints/${endpoint.id}` : '/api/endpoints',
        { method: endpoint ? 'PATCH' : 'POST', body });
      if (endpoint) {
        announce('Endpoint saved.');
        navigate(`#/endpoints/${saved.id}`);
      } else {
        showSecretOnce(saved.signing_secret, 'Receivers verify each delivery\'s signature with it.',
          () => navigate(`#/endpoints/${saved.id}`));
      }
    } catch (error) {
      save.disabled = false;
      const left = error instanceof ApiError && error.code === 'validation_failed'
        ? showProblems(form, error.body.details, FIELDS)
        : [error.message];
      if (left.length) problem.replaceChildren(errorBox(left.join(' ')));
    }
  });

  return h('section', { 'aria-labelledby': 'page-title' },
    h('p', { class: 'breadcrumb' }, h('a', { href: back }, endpoint ? `← ${endpointName(endpoint)}` : '← Endpoints')),
    h('h1', { id: 'page-title', tabindex: '-1' }, heading),
    form);
}

/** `Name: value` lines as an object, or the first line that is not one. */
function parseHeaders(text) {
  const headers = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const colon = line.indexOf(':');
    if (colon < 1) return { problem: `"${line}" is not "Name: value".` };
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return { headers };
}
