// Building the page: elements from plain data, never from HTML text (the page's
// Content-Security-Policy forbids `innerHTML`), and the few formats every view shares.

/**
 * An element: `h('a', {href: '#/events', class: 'link'}, 'Events')`. Props named `on<event>`
 * become listeners; `true` sets an empty attribute, `false`/`null`/`undefined` sets none.
 * Children are nodes, strings (as text) or arrays of them; `null` and `false` are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.className = value;
    } else if (name === 'value') {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace everything inside `el` with `children`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Say `message` to screen readers (the page's polite live region). */
export function announce(message) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  // A change the screen reader notices even when the same message repeats.
  setTimeout(() => { region.textContent = message; }, 50);
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});

/** A `<time>` showing an RFC 3339 instant in the reader's time zone; `–` for none. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '–');
  const at = new Date(iso);
  return h('time', { datetime: iso, title: iso }, dateTime.format(at));
}

/** `35 ms`, `1.2 s`. */
export function duration(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** An event's status as a labelled badge (the word is always there; colour only adds to it). */
export function statusBadge(status) {
  return h('span', { class: `badge badge-${status}` }, status);
}

/** An error box that screen readers announce. */
export function errorBox(message) {
  return h('div', { class: 'error-box', role: 'alert' }, message);
}
