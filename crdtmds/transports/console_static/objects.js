// Network objects and services: a list per type (and the tags in use), added, edited and
// deleted in the session; the API's complaint about a field is shown next to it.

import { h, clear, field, openDialog, showFormError, clearFieldErrors, names, splitNames } from './dom.js';

const TYPES = {
  host: { label: 'Hosts', fields: [['ipv4-address', 'IPv4 address'], ['ipv6-address', 'IPv6 address']] },
  network: { label: 'Networks', fields: [['subnet4', 'IPv4 subnet'], ['mask-length4', 'IPv4 mask length'],
    ['subnet6', 'IPv6 subnet'], ['mask-length6', 'IPv6 mask length']] },
  'address-range': { label: 'Address ranges', fields: [['ipv4-address-first', 'First IPv4 address'],
    ['ipv4-address-last', 'Last IPv4 address'], ['ipv6-address-first', 'First IPv6 address'],
    ['ipv6-address-last', 'Last IPv6 address']] },
  group: { label: 'Groups', fields: [['members', 'Members']] },
  'service-tcp': { label: 'TCP services', fields: [['port', 'Port']] },
  'service-udp': { label: 'UDP services', fields: [['port', 'Port']] },
};
const NUMBERS = new Set(['mask-length4', 'mask-length6']);
const LISTS = new Set(['members', 'tags']);
const FLASH_MS = 2500;

class ObjectsPage extends HTMLElement {
  connectedCallback() {
    this.type = sessionStorage.getItem('crdtmds.console.type') || 'host';
    this.flash = new Map();
    this.known = null;
    this.tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Object types' },
      [...Object.entries(TYPES), ['tag', { label: 'Tags' }]].map(([type, { label }]) =>
        h('button', { type: 'button', role: 'tab', dataset: { type }, onclick: () => this.choose(type) }, label)));
    this.filter = h('input', { name: 'filter', type: 'search', placeholder: 'name contains…',
      oninput: () => { clearTimeout(this.timer); this.timer = setTimeout(() => this.load(), 250); } });
    this.status = h('span', { class: 'total', role: 'status' });
    this.addButton = h('button', { type: 'button', class: 'primary', onclick: () => this.edit(null) }, 'Add');
    this.list = h('div', { class: 'object-list' });
    clear(this, this.tabs, h('div', { class: 'toolbar' }, field('Filter objects', this.filter), this.status, this.addButton), this.list);
    this.onDomain = () => this.load({ live: true });
    this.ctx.live.addEventListener('domain', this.onDomain);
    this.addEventListener('session-changed', () => this.load());
    this.choose(this.type);
  }

  disconnectedCallback() {
    this.ctx.live.removeEventListener('domain', this.onDomain);
  }

  choose(type) {
    this.type = type;
    this.known = null;
    sessionStorage.setItem('crdtmds.console.type', type);
    for (const tab of this.tabs.children) tab.setAttribute('aria-selected', String(tab.dataset.type === type));
    this.addButton.hidden = type === 'tag';
    this.load();
  }

  async load({ live = false } = {}) {
    const filter = this.filter.value.trim();
    const type = this.type;
    let objects;
    try {
      if (type === 'tag') objects = await this.ctx.api.all('show-objects', {});
      else objects = await this.ctx.api.all(`show-${plural(type)}`, filter ? { filter } : {});
    } catch (err) {
      this.status.textContent = err.message;
      return;
    }
    if (type !== this.type) return;
    const until = performance.now() + FLASH_MS;
    const now = new Map(objects.map((o) => [o.uid, JSON.stringify(o)]));
    if (live && this.known) {
      for (const [uid, sig] of now) if (this.known.get(uid) !== sig) this.flash.set(uid, until);
      setTimeout(() => this.render(), FLASH_MS + 50);
    }
    this.known = now;
    this.objects = objects;
    this.render();
  }

  render() {
    if (this.type === 'tag') return this.renderTags();
    const fields = TYPES[this.type].fields;
    const now = performance.now();
    this.status.textContent = `${this.objects.length} ${TYPES[this.type].label.toLowerCase()}`;
    clear(this.list, h('table', { class: 'objects' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Name'), fields.map(([, label]) => h('th', { scope: 'col' }, label)),
        h('th', { scope: 'col' }, 'Tags'), h('th', { scope: 'col' }, 'Comments'), h('th', { scope: 'col' }, ''))),
      h('tbody', null, this.objects.map((o) => h('tr', {
        dataset: { uid: o.uid }, class: (this.flash.get(o.uid) || 0) > now ? 'flash' : null },
      h('td', { class: 'name' }, o.name),
      fields.map(([key]) => h('td', null, Array.isArray(o[key]) ? names(o[key]) : o[key] ?? '')),
      h('td', null, names(o.tags)), h('td', { class: 'comments', title: o.comments || null }, o.comments || ''),
      h('td', { class: 'actions' },
        h('button', { type: 'button', onclick: () => this.edit(o), 'aria-label': `Edit ${o.name}` }, 'Edit'),
        h('button', { type: 'button', class: 'danger', onclick: () => this.remove(o), 'aria-label': `Delete ${o.name}` }, 'Delete')))))));
  }

  renderTags() {
    const tags = new Map();
    for (const o of this.objects) for (const t of o.tags || []) {
      if (!tags.has(t.name)) tags.set(t.name, []);
      tags.get(t.name).push(o);
    }
    const filter = this.filter.value.trim().toLowerCase();
    const shown = [...tags].filter(([name]) => name.toLowerCase().includes(filter)).sort();
    this.status.textContent = `${shown.length} tags`;
    clear(this.list, h('table', { class: 'objects' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Tag'), h('th', { scope: 'col' }, 'Objects'))),
      h('tbody', null, shown.map(([name, objects]) => h('tr', null, h('td', { class: 'name' }, name),
        h('td', null, objects.map((o) => `${o.name} (${o.type})`).join(', ')))))));
  }

  async remove(object) {
    const yes = h('button', { type: 'button', class: 'danger', onclick: async () => {
      dialog.close();
      try {
        await this.ctx.api.call(`delete-${object.type}`, { uid: object.uid });
      } catch (err) {
        this.status.textContent = err.message;
      }
      this.ctx.sessionChanged();
    } }, 'Delete');
    const dialog = openDialog(`Delete ${object.type}?`, h('div', null,
      h('p', null, 'Delete ', h('q', null, object.name), ' in this session?'), yes,
      h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')));
    yes.focus();
  }

  edit(object) {
    const type = object?.type || this.type;
    const value = (key) => {
      const v = object?.[key];
      return Array.isArray(v) ? names(v) : v ?? '';
    };
    const form = h('form', { class: 'editor', novalidate: true },
      field('Name', h('input', { name: 'name', value: value('name') })),
      TYPES[type].fields.map(([key, label]) => field(label, h('input', { name: key, value: value(key) }),
        LISTS.has(key) ? 'names, separated by commas' : null)),
      field('Tags', h('input', { name: 'tags', value: value('tags') }), 'names, separated by commas'),
      field('Comments', h('input', { name: 'comments', value: value('comments') })),
      h('p', { class: 'form-error', role: 'alert', hidden: true }),
      h('button', { type: 'submit', class: 'primary' }, object ? 'Save' : 'Add'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      const params = objectParams(form, object);
      try {
        await this.ctx.api.call(`${object ? 'set' : 'add'}-${type}`, params);
      } catch (err) {
        showFormError(form, err);
        return;
      }
      dialog.close();
      this.ctx.sessionChanged();
    });
    const dialog = openDialog(object ? `Edit ${type} ${object.name}` : `Add a ${type}`, form);
    form.elements.name.focus();
  }
}

function objectParams(form, object) {
  const params = object ? { uid: object.uid } : {};
  for (const control of form.elements) {
    if (!control.name) continue;
    const text = control.value.trim();
    if (control.name === 'name' && object) {
      if (control.value !== object.name) params['new-name'] = control.value;
    } else if (LISTS.has(control.name)) {
      if (text || object) params[control.name] = splitNames(text);
    } else if (NUMBERS.has(control.name)) {
      if (text) params[control.name] = /^\d+$/.test(text) ? Number(text) : text;
    } else if (text || (object && control.name === 'comments')) {
      params[control.name] = control.name === 'name' || control.name === 'comments' ? control.value : text;
    }
  }
  return params;
}

function plural(type) {
  return { host: 'hosts', network: 'networks', 'address-range': 'address-ranges', group: 'groups',
    'service-tcp': 'services-tcp', 'service-udp': 'services-udp' }[type];
}

customElements.define('crd-objects', ObjectsPage);
