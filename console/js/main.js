// The console's shell: signing in (a pasted API key, or a portal link's token exchanged for a
// session), the navigation, and the router that shows one view per address (`#/events`,
// `#/events/<id>`, `#/endpoints/<id>`, `#/recovery`, `#/overview`).
//
// A view is a module exporting `title` and `render(context)`, which resolves to the element to
// show; adding one is a module and a line in ROUTES.

import { api, ApiError } from './api.js';
import * as session from './session.js';
import { h, replaceChildren, announce, errorBox, time } from './dom.js';
import { signInPage } from './views/signin.js';
import * as overview from './views/overview.js';
import * as events from './views/events.js';
import * as event from './views/event.js';
import * as endpointsView from './views/endpoints.js';
import * as endpointView from './views/endpoint.js';
import * as endpointForm from './views/endpoint-form.js';
import * as recovery from './views/recovery.js';

/** Every view: the address it answers, and its entry in the navigation, if any. */
const ROUTES = [
  { pattern: /^\/overview$/, view: overview, nav: { label: 'Overview', href: '#/overview' } },
  { pattern: /^\/endpoints$/, view: endpointsView, nav: { label: 'Endpoints', href: '#/endpoints' } },
  { pattern: /^\/endpoints\/new$/, view: endpointForm, section: '#/endpoints' },
  { pattern: /^\/endpoints\/([^/?]+)\/edit$/, view: endpointForm, section: '#/endpoints' },
  { pattern: /^\/endpoints\/([^/?]+)$/, view: endpointView, section: '#/endpoints' },
  { pattern: /^\/events$/, view: events, nav: { label: 'Events', href: '#/events' } },
  { pattern: /^\/events\/([^/?]+)$/, view: event, section: '#/events' },
  { pattern: /^\/recovery$/, view: recovery, nav: { label: 'Recovery', href: '#/recovery' } },
];
const HOME = '#/events';
const LINK_PREFIX = '#portal=';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const account = document.getElementById('account');

/** Bumped by every page change: a view that finishes loading after a newer change is dropped. */
let ticket = 0;
/** The events list (with its filters) that the event page's back link returns to. */
let eventsHref = HOME;
let expiryTimer;

function address() {
  const [path, search = ''] = location.hash.replace(/^#/, '').split('?');
  return { path: path || '', search: new URLSearchParams(search) };
}

function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

/** Show the view of the current address (or the sign-in page without a working credential). */
async function show({ focus, message, notice, initial = false } = {}) {
  const mine = ++ticket;
  const credential = session.current();
  if (!credential) return showSignIn(null);
  if (session.expired(credential)) return signOut('expired', { revoke: false });
  const { path, search } = address();
  const route = ROUTES.find((r) => r.pattern.test(path));
  if (!route) {
    history.replaceState(null, '', `${location.pathname}${HOME}`);
    return show({ initial });
  }
  showShell(credential, route);
  main.setAttribute('aria-busy', 'true');
  let content;
  try {
    content = await route.view.render({
      params: path.match(route.pattern).slice(1).map(decodeURIComponent),
      search,
      credential,
      navigate,
      refresh: (options) => show(options),
      backHref: eventsHref,
      notice,
    });
  } catch (error) {
    // A refused credential has already brought the sign-in page up.
    if (error instanceof ApiError && error.status === 401) return;
    content = failed(route.view.title, error);
  }
  if (mine !== ticket) return;
  main.removeAttribute('aria-busy');
  replaceChildren(main, content);
  // When each view became usable, for whoever measures the page (the browser test does).
  performance.mark('console:view-shown', { detail: path });
  if (route.view === events) eventsHref = location.hash;
  const heading = document.getElementById('page-title');
  document.title = `${heading?.textContent ?? route.view.title} · Triggers console`;
  if (message) announce(message);
  // The element the change started from, if it is still there and usable; else the heading.
  const wanted = focus ? document.getElementById(focus) : null;
  const target = wanted && !wanted.disabled ? wanted : (focus || !initial) && heading;
  target?.focus();
}

function failed(title, error) {
  const retry = h('button', { type: 'button' }, 'Try again');
  retry.addEventListener('click', () => show());
  return h('section', { 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, title),
    errorBox(`This page could not be loaded: ${error.message}`),
    retry);
}

/** The navigation and the account box, for a signed-in tab. */
function showShell(credential, route) {
  const current = route.nav?.href ?? route.section;
  replaceChildren(nav, h('ul', {}, ROUTES.filter((r) => r.nav).map((r) =>
    h('li', {}, h('a', { href: r.nav.href, 'aria-current': r.nav.href === current ? 'page' : null }, r.nav.label)))));
  nav.hidden = false;
  if (account.dataset.token !== credential.token) {
    account.dataset.token = credential.token;
    const name = h('span', { id: 'org-name', class: 'org-name' });
    api('/api/keys').then((org) => { name.textContent = org.organization_name; }, () => {});
    const signOutButton = h('button', { type: 'button', id: 'sign-out' }, 'Sign out');
    signOutButton.addEventListener('click', () => signOut('signed_out', { revoke: true }));
    replaceChildren(account,
      name,
      credential.readOnly && h('span', { class: 'badge badge-readonly', id: 'read-only-badge' }, 'Read-only'),
      credential.expiresAt && h('span', { class: 'muted' }, 'Session ends ', time(credential.expiresAt)),
      signOutButton);
    scheduleExpiry(credential);
  }
  account.hidden = false;
}

function scheduleExpiry(credential) {
  clearTimeout(expiryTimer);
  if (!credential.expiresAt) return;
  const left = Date.parse(credential.expiresAt) - Date.now();
  expiryTimer = setTimeout(() => signOut('expired', { revoke: false }), Math.max(0, Math.min(left, 2 ** 31 - 1)));
}

function showSignIn(reason) {
  ticket++;
  clearTimeout(expiryTimer);
  nav.hidden = true;
  account.hidden = true;
  delete account.dataset.token;
  replaceChildren(nav);
  replaceChildren(account);
  main.removeAttribute('aria-busy');
  replaceChildren(main, signInPage({
    reason,
    onSignedIn(credential) {
      session.store(credential);
      announce('Signed in.');
      show();
    },
  }));
  document.title = 'Sign in · Triggers console';
  if (reason) document.getElementById('page-title')?.focus();
}

/** Forget the tab's credential (revoking a session first, if asked) and show the sign-in page. */
async function signOut(reason, { revoke }) {
  const credential = session.current();
  session.forget();
  showSignIn(reason);
  if (revoke && credential?.kind === 'session' && credential.id) {
    await api(`/api/portal/sessions/${credential.id}`, { method: 'DELETE', token: credential.token }).catch(() => {});
  }
}

/** Open a portal link: take its token out of the address at once, then trade it for a session. */
async function openLink() {
  const token = decodeURIComponent(location.hash.slice(LINK_PREFIX.length));
  history.replaceState(null, '', `${location.pathname}${HOME}`);
  session.forget();
  try {
    const opened = await api('/api/portal/exchange', { method: 'POST', body: { token }, anonymous: true });
    session.store({
      kind: 'session',
      token: opened.session_token,
      id: opened.id,
      readOnly: opened.read_only,
      expiresAt: opened.expires_at,
    });
    show({ initial: true });
  } catch (error) {
    showSignIn(error instanceof ApiError && error.status === 401 ? 'link_refused' : error.message);
  }
}

function route() {
  if (location.hash.startsWith(LINK_PREFIX)) openLink();
  else show();
}

window.addEventListener('console:signed-out', (e) => {
  signOut(e.detail.code === 'invalid_api_key' ? 'key_refused' : 'ended', { revoke: false });
});
window.addEventListener('hashchange', route);
document.getElementById('skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  (document.getElementById('page-title') ?? main).focus();
});

if (location.hash.startsWith(LINK_PREFIX)) openLink();
else show({ initial: true });
