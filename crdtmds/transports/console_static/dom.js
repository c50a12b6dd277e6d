// Building DOM from data: every value becomes a text node or a property, never markup,
// so names and comments an administrator typed are shown as typed and never run.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value' || key === 'checked' || key === 'selected') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A field: label, control, and the place where the API's complaint about it is shown.
let fieldCounter = 0;
export function field(label, control, hint) {
  const id = `f${++fieldCounter}`;
  control.id = id;
  const error = h('p', { class: 'field-error', id: `${id}-error`, role: 'alert', hidden: true });
  control.setAttribute('aria-describedby', `${id}-error`);
  return h('div', { class: 'field', dataset: { field: control.name || '' } },
    h('label', { for: id }, label), control, hint ? h('p', { class: 'hint' }, hint) : null, error);
}

export function showFieldError(form, name, message) {
  const control = form.querySelector(`[name="${CSS.escape(name)}"]`);
  const error = control && form.querySelector(`#${CSS.escape(control.id)}-error`);
  if (!error) return false;
  error.textContent = message;
  error.hidden = false;
  control.setAttribute('aria-invalid', 'true');
  control.focus();
  return true;
}

export function clearFieldErrors(form) {
  for (const error of form.querySelectorAll('.field-error')) {
    error.textContent = '';
    error.hidden = true;
  }
  for (const control of form.querySelectorAll('[aria-invalid]')) control.removeAttribute('aria-invalid');
  const general = form.querySelector('.form-error');
  if (general) { general.textContent = ''; general.hidden = true; }
}

const ALIASES = { 'new-name': 'name', 'ip-address': 'ipv4-address' };

// The field an API error message is about: the first quoted name that is one of the
// form's fields (the command layer quotes the parameter it refuses).
export function fieldOfError(error, names) {
  if (error.code === 'err_name_in_use' && names.includes('name')) return 'name';
  for (const match of String(error.message).matchAll(/'([a-z0-9-]+)'/g)) {
    const name = ALIASES[match[1]] || match[1];
    if (names.includes(name)) return name;
  }
  return null;
}

export function showFormError(form, error) {
  const names = [...form.elements].map((c) => c.name).filter(Boolean);
  const name = fieldOfError(error, names);
  if (name && showFieldError(form, name, error.message)) return name;
  const general = form.querySelector('.form-error');
  general.textContent = error.message;
  general.hidden = false;
  return null;
}

export function when(posixMillis) {
  if (!posixMillis) return '';
  return new Date(posixMillis).toLocaleString();
}

export function names(list) {
  return (list || []).map((ref) => (typeof ref === 'string' ? ref : ref.name ?? ref.uid)).join(', ');
}

export function splitNames(text) {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

// A modal dialog holding `content`; resolves when it closes. Escape closes it.
export function openDialog(title, content, { onClose } = {}) {
  const dialog = h('dialog', { 'aria-label': title },
    h('header', null, h('h2', null, title),
      h('button', { type: 'button', class: 'close', 'aria-label': 'Close', onclick: () => dialog.close() }, '×')),
    content);
  dialog.addEventListener('close', () => { dialog.remove(); if (onClose) onClose(); });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}
