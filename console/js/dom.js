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

/**
 * A labelled form field: `label` for `control` (whose `id` it takes), an optional hint, and a
 * problem line that [`showProblems`] fills from the API's `422` details.
 */
export function field(label, control, hint) {
  const id = control.id;
  const problem = h('p', { id: `${id}-problem`, class: 'field-problem', hidden: true });
  const described = [hint && `${id}-hint`, control.getAttribute('aria-describedby')].filter(Boolean);
  if (described.length) control.setAttribute('aria-describedby', described.join(' '));
  return h('div', { class: 'field', 'data-field': id },
    h('label', { for: id }, label), control,
    hint && h('span', { id: `${id}-hint`, class: 'hint' }, hint),
    problem);
}

/**
 * Show a `422 validation_failed` answer's `details` beside the fields they name (`fields` maps an
 * API field, e.g. `event_types` for `event_types[1]`, to a control's id). Returns the messages no
 * field took; focuses the first bad field.
 */
export function showProblems(form, details, fields) {
  for (const problem of form.querySelectorAll('.field-problem')) {
    problem.hidden = true;
    problem.textContent = '';
  }
  for (const bad of form.querySelectorAll('[aria-invalid]')) bad.removeAttribute('aria-invalid');
  const left = [];
  let first;
  for (const { field: name, message } of details ?? []) {
    const id = fields[name] ?? fields[name.split(/[[.]/)[0]];
    const control = id && form.querySelector(`#${id}`);
    if (!control) {
      left.push(`${name}: ${message}`);
      continue;
    }
    const problem = form.querySelector(`#${id}-problem`);
    problem.textContent = problem.textContent ? `${problem.textContent} ${message}` : `${name}: ${message}`;
    problem.hidden = false;
    control.setAttribute('aria-invalid', 'true');
    if (!control.getAttribute('aria-describedby')?.includes(problem.id)) {
      control.setAttribute('aria-describedby', `${problem.id} ${control.getAttribute('aria-describedby') ?? ''}`.trim());
    }
    first ??= control;
  }
  first?.focus();
  return left;
}

/**
 * A modal `<dialog>` titled `heading` (Escape closes it; focus stays inside while open; the
 * element that opened it gets focus back). `build(close)` returns its content.
 */
export function openDialog(id, heading, build) {
  const opener = document.activeElement;
  const dialog = h('dialog', { id, class: 'dialog', 'aria-labelledby': `${id}-title` });
  const close = () => dialog.close();
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener?.isConnected) opener.focus();
  });
  dialog.append(h('h2', { id: `${id}-title` }, heading));
  append(dialog, [build(close)]);
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/**
 * A dialog that asks before acting: `content`, then the confirm button (`confirmId`, `label`)
 * and Cancel. Confirming runs `run()`; when it resolves the dialog closes and the function it
 * resolved to, if any, runs; when it fails, the error shows in the dialog, which stays open.
 */
export function actionDialog(id, heading, { content, confirmId, label, danger = false, run }) {
  openDialog(id, heading, (close) => {
    const problem = h('div', {});
    const go = h('button', { type: 'submit', class: danger ? 'danger' : 'primary', id: confirmId }, label);
    const form = h('form', { method: 'dialog' }, content, problem,
      // Where focus starts: Cancel, when the action cannot be undone.
      h('div', { class: 'actions' }, go, h('button', { type: 'button', onclick: close, autofocus: danger }, 'Cancel')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      go.disabled = true;
      problem.replaceChildren();
      try {
        const after = await run();
        close();
        after?.();
      } catch (error) {
        go.disabled = false;
        problem.replaceChildren(errorBox(error.message));
      }
    });
    return form;
  });
}
