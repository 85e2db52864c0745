// The public API, as the console calls it: same origin, the tab's credential as a bearer token,
// JSON in and out. Every error answer of the API is `{"error", "code", ...}`.

import * as session from './session.js';

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `The service answered ${status}.`);
    this.status = status;
    this.code = body?.code ?? 'unknown';
    this.body = body;
  }
}

/**
 * Call `path` (e.g. `/api/inbox?status=failed`). `anonymous` sends no credential; `token`
 * sends that one instead of the tab's. A `401` with the tab's credential means it no longer
 * works: the `console:signed-out` event tells the page, which shows the sign-in page.
 */
export async function api(path, { method = 'GET', body, token, anonymous = false } = {}) {
  const headers = { Accept: 'application/json' };
  const credential = anonymous ? null : token ?? session.current()?.token;
  if (credential) headers.Authorization = `Bearer ${credential}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    throw new ApiError(0, {
      error: 'The service could not be reached. Check the connection and try again.',
      code: 'network_error',
    });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && !anonymous && token === undefined) {
      window.dispatchEvent(new CustomEvent('console:signed-out', { detail: { code: error.code } }));
    }
    throw error;
  }
  return data;
}

/** A query string of the defined, non-empty values: `?status=failed&limit=50`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
