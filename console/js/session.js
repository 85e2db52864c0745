// The credential of this browser tab: an API key pasted on the sign-in page, or a console
// session a portal link was exchanged for. It lives in `sessionStorage` only (this tab, until it
// closes): never in a cookie, never in `localStorage`.

const STORAGE_KEY = 'triggers.console.credential';

/**
 * @typedef {object} Credential
 * @property {'api_key'|'session'} kind
 * @property {string} token       sent as `Authorization: Bearer`
 * @property {string} [id]        the session's id (sessions only)
 * @property {boolean} readOnly
 * @property {string} [expiresAt] RFC 3339 (sessions only)
 */

/** @returns {Credential|null} */
export function current() {
  let stored;
  try {
    stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null');
  } catch {
    return null;
  }
  if (!stored || typeof stored.token !== 'string' || !stored.token) return null;
  if (stored.kind !== 'api_key' && stored.kind !== 'session') return null;
  return {
    kind: stored.kind,
    token: stored.token,
    id: typeof stored.id === 'string' ? stored.id : undefined,
    readOnly: stored.readOnly === true,
    expiresAt: typeof stored.expiresAt === 'string' ? stored.expiresAt : undefined,
  };
}

/** @param {Credential} credential */
export function store(credential) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credential));
}

export function forget() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Has the credential's session passed its expiry (by this browser's clock)? */
export function expired(credential) {
  return Boolean(credential?.expiresAt) && Date.parse(credential.expiresAt) <= Date.now();
}
