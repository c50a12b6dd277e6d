// The rulebase: a virtual list (only the rows in view exist; pages of rules are fetched
// as they come into view), sections, names resolved, a side panel for the object under
// a name, a filter, and rules added, edited, moved, disabled and deleted in the session.
// Updates from the live stream reload what is in view and highlight the rows that changed.

import { h, clear, field, openDialog, showFormError, clearFieldErrors, names, splitNames } from './dom.js';
import { ObjectPanel } from './panel.js';

const ROW = 34; // px, one line per rule
const CHUNK = 100; // rules per show-access-rulebase call
const OVERSCAN = 8;
const FLASH_MS = 2500;
const COLUMNS = ['No.', 'Name', 'Source', 'Destination', 'Service', 'Action', 'Track', 'Enabled', 'Comments', ''];

class RulebasePage extends HTMLElement {
  connectedCallback() {
    this.rows = []; // {kind: 'rule', index} | {kind: 'section', uid, name}
    this.cache = new Map(); // index -> rule
    this.loading = new Map(); // chunk -> promise
    this.flash = new Map(); // uid -> until (ms)
    this.selected = 0;
    this.generation = 0;
    this.query = '';
    this.filter = h('input', { name: 'filter', type: 'search', placeholder: 'rule name contains…',
      oninput: () => { clearTimeout(this.filterTimer); this.filterTimer = setTimeout(() => this.load(), 250); } });
    this.total = h('span', { class: 'total', role: 'status' });
    this.spacer = h('div', { class: 'spacer' });
    this.layerEl = h('div', { class: 'rows' });
    this.scroller = h('div', { class: 'scroller', tabindex: '0', role: 'grid', 'aria-label': 'Rules',
      onscroll: () => this.schedule(), onkeydown: (e) => this.key(e) }, this.spacer, this.layerEl);
    this.panel = new ObjectPanel(this.ctx.api, (number) => this.reveal(number));
    clear(this,
      h('div', { class: 'toolbar' }, field('Filter rules', this.filter), this.total,
        h('button', { type: 'button', class: 'primary', onclick: () => this.edit(null) }, 'Add rule')),
      h('div', { class: 'with-panel' },
        h('div', { class: 'table' },
          h('div', { class: 'row head', role: 'row' }, COLUMNS.map((c) => h('span', { role: 'columnheader' }, c))),
          this.scroller),
        this.panel.element));
    this.onDomain = () => this.load({ live: true });
    this.onReady = () => this.load({ live: true });
    this.ctx.live.addEventListener('domain', this.onDomain);
    this.ctx.live.addEventListener('ready', this.onReady);
    this.addEventListener('session-changed', () => this.load({ live: false }));
    // The first load waits for the stream (so that no publish falls between the two),
    // but not long if the stream is slow; a later `ready` is a reconnect: reload.
    if (this.ctx.live.state === 'live') this.load();
    else this.fallback = setTimeout(() => { if (!this.generation) this.load(); }, 1000);
  }

  disconnectedCallback() {
    clearTimeout(this.fallback);
    this.ctx.live.removeEventListener('domain', this.onDomain);
    this.ctx.live.removeEventListener('ready', this.onReady);
  }

  // The rows of the layer (or of the filtered list), and the rules in view; the old
  // rows stay on screen until the new ones are in.
  async load({ live = false } = {}) {
    const generation = ++this.generation;
    const api = this.ctx.api;
    const filter = this.filter.value.trim();
    const fresh = { rows: [], cache: new Map(), loading: new Map(), query: filter };
    // The page of rules most likely in view, asked for alongside the layout.
    const guess = Math.max(0, Math.floor(this.scroller.scrollTop / ROW) - OVERSCAN);
    this.fetchChunk(fresh, Math.floor(guess / CHUNK));
    let rows;
    try {
      if (filter) {
        const first = await api.call('show-access-rulebase', { filter, offset: 0, limit: 0 });
        rows = Array.from({ length: first.total }, (_, index) => ({ kind: 'rule', index }));
      } else {
        rows = layoutRows(await api.call('show-layer-structure'));
      }
    } catch (err) {
      this.total.textContent = err.message;
      return;
    }
    if (generation !== this.generation) return;
    const old = this.cache;
    fresh.rows = rows;
    await Promise.all(this.visibleChunks(rows).map((c) => this.fetchChunk(fresh, c)));
    if (generation !== this.generation) return;
    if (live && this.loaded) this.markChanged(old, fresh.cache);
    Object.assign(this, fresh);
    this.loaded = true;
    this.selected = Math.min(this.selected, Math.max(rows.length - 1, 0));
    const count = rows.filter((r) => r.kind === 'rule').length;
    this.total.textContent = `${count} rule${count === 1 ? '' : 's'}${filter ? ' match' : ''}`;
    this.total.dataset.total = count;
    this.scroller.setAttribute('aria-rowcount', rows.length);
    this.spacer.style.height = `${rows.length * ROW}px`;
    this.render();
  }

  markChanged(old, fresh) {
    const before = new Map([...old.values()].map((r) => [r.uid, signature(r)]));
    const until = performance.now() + FLASH_MS;
    for (const [index, rule] of fresh) {
      const was = before.get(rule.uid);
      if (was === undefined ? old.has(index) || old.size === 0 : was !== signature(rule)) {
        this.flash.set(rule.uid, until);
      }
    }
    if (this.flash.size) setTimeout(() => this.render(), FLASH_MS + 50);
  }

  visibleChunks(rows) {
    const [first, last] = this.windowRange(rows.length);
    const chunks = new Set();
    for (let i = first; i < last; i++) if (rows[i].kind === 'rule') chunks.add(Math.floor(rows[i].index / CHUNK));
    return [...chunks];
  }

  windowRange(count) {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    return [Math.max(0, Math.floor(top / ROW) - OVERSCAN), Math.min(count, Math.ceil((top + height) / ROW) + OVERSCAN)];
  }

  fetchChunk(target, chunk) {
    if (!target.loading.has(chunk)) {
      const params = { offset: chunk * CHUNK, limit: CHUNK, 'use-object-dictionary': false };
      if (target.query) params.filter = target.query;
      target.loading.set(chunk, this.ctx.api.call('show-access-rulebase', params).then((reply) => {
        let index = chunk * CHUNK;
        for (const item of reply.rulebase) {
          for (const rule of item.type === 'access-section' ? item.rulebase : [item]) target.cache.set(index++, rule);
        }
      }).catch((err) => { target.loading.delete(chunk); this.total.textContent = err.message; }));
    }
    return target.loading.get(chunk);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = null; this.render(); });
  }

  render() {
    const [first, last] = this.windowRange(this.rows.length);
    const missing = new Set();
    const now = performance.now();
    const elements = [];
    for (let i = first; i < last; i++) {
      const row = this.rows[i];
      let el;
      if (row.kind === 'section') {
        el = h('div', { class: 'row section', role: 'row', id: `row-${i}` },
          h('span', { role: 'gridcell', class: 'section-name' }, row.name || '(unnamed section)'));
      } else {
        const rule = this.cache.get(row.index);
        if (!rule) missing.add(Math.floor(row.index / CHUNK));
        el = rule ? this.ruleRow(rule, i, now) : h('div', { class: 'row pending', role: 'row', id: `row-${i}` }, '…');
      }
      el.style.transform = `translateY(${i * ROW}px)`;
      if (i === this.selected) el.classList.add('selected');
      elements.push(el);
    }
    this.layerEl.replaceChildren(...elements);
    if (this.rows.length) this.scroller.setAttribute('aria-activedescendant', `row-${this.selected}`);
    for (const chunk of missing) this.fetchChunk(this, chunk).then(() => this.schedule());
    if (elements.length && !missing.size && !this.painted) {
      this.painted = true; // the next frame shows the first rows (bench/console.py reads it)
      requestAnimationFrame(() => { window.crdRowsPainted = performance.now(); });
    }
  }

  ruleRow(rule, i, now) {
    const ref = (item) => h('button', { type: 'button', class: 'ref', dataset: { uid: item.uid },
      onclick: () => this.panel.show(item.uid) }, item.name ?? item.uid);
    const refs = (list) => h('span', { role: 'gridcell', class: 'refs' }, (list || []).map(ref));
    const flashing = (this.flash.get(rule.uid) || 0) > now;
    return h('div', { class: `row rule${rule.enabled === false ? ' disabled' : ''}${flashing ? ' flash' : ''}`,
      role: 'row', id: `row-${i}`, dataset: { uid: rule.uid, number: rule['rule-number'] },
      draggable: this.query ? null : 'true',
      ondragstart: (e) => { e.dataTransfer.setData('text/x-crdtmds-rule', rule.uid); },
      ondragover: (e) => { if (e.dataTransfer.types.includes('text/x-crdtmds-rule')) e.preventDefault(); },
      ondrop: (e) => this.dropOn(e, rule),
      onclick: () => { this.selected = i; this.render(); } },
    h('span', { role: 'gridcell', class: 'num' }, rule['rule-number']),
    h('span', { role: 'gridcell', class: 'name' }, rule.name || ''),
    refs(rule.source), refs(rule.destination), refs(rule.service),
    h('span', { role: 'gridcell', class: `action ${(rule.action?.name || '').toLowerCase()}` }, rule.action?.name || ''),
    h('span', { role: 'gridcell' }, rule.track?.type?.name || ''),
    h('span', { role: 'gridcell' }, rule.enabled === false ? 'no' : 'yes'),
    h('span', { role: 'gridcell', class: 'comments', title: rule.comments || null }, rule.comments || ''),
    h('span', { role: 'gridcell', class: 'actions' },
      h('button', { type: 'button', onclick: () => this.edit(rule), 'aria-label': `Edit rule ${rule['rule-number']}` }, 'Edit'),
      h('button', { type: 'button', onclick: () => this.toggle(rule),
        'aria-label': `${rule.enabled === false ? 'Enable' : 'Disable'} rule ${rule['rule-number']}` },
      rule.enabled === false ? 'Enable' : 'Disable'),
      h('button', { type: 'button', class: 'danger', onclick: () => this.remove(rule),
        'aria-label': `Delete rule ${rule['rule-number']}` }, 'Delete')));
  }

  key(event) {
    const steps = { ArrowDown: 1, ArrowUp: -1, PageDown: 15, PageUp: -15 };
    const count = this.rows.length;
    if (!count || event.target !== this.scroller) return;
    if (event.altKey && (event.key === 'ArrowUp' || event.key === 'ArrowDown')) {
      this.moveSelected(event.key === 'ArrowUp' ? -1 : 1);
    } else if (event.key in steps) this.select(this.selected + steps[event.key]);
    else if (event.key === 'Home') this.select(0);
    else if (event.key === 'End') this.select(count - 1);
    else if (event.key === 'Enter' || event.key === 'Delete') {
      const row = this.rows[this.selected];
      const rule = row?.kind === 'rule' && this.cache.get(row.index);
      if (rule) event.key === 'Enter' ? this.edit(rule) : this.remove(rule);
    } else return;
    event.preventDefault();
  }

  select(i) {
    this.selected = Math.max(0, Math.min(this.rows.length - 1, i));
    const top = this.selected * ROW;
    const { scrollTop, clientHeight } = this.scroller;
    if (top < scrollTop) this.scroller.scrollTop = top;
    else if (top + ROW > scrollTop + clientHeight) this.scroller.scrollTop = top + ROW - clientHeight;
    this.render();
  }

  // A rule dragged onto another takes its place (the other moves down, or up).
  async dropOn(event, target) {
    event.preventDefault();
    const uid = event.dataTransfer.getData('text/x-crdtmds-rule');
    if (!uid || uid === target.uid) return;
    await this.change('set-access-rule', { uid, 'new-position': target['rule-number'] });
  }

  // Alt+Arrow: the selected rule one place up or down, in the session.
  async moveSelected(step) {
    const row = this.rows[this.selected];
    const rule = row?.kind === 'rule' && !this.query && this.cache.get(row.index);
    if (!rule) return;
    const target = rule['rule-number'] + step;
    if (target < 1 || target > this.rows.filter((r) => r.kind === 'rule').length) return;
    await this.change('set-access-rule', { uid: rule.uid, 'new-position': target });
    this.select(this.rows.findIndex((r) => r.kind === 'rule' && r.index === target - 1));
  }

  // Scroll to rule `number` (from the side panel's where-used list).
  reveal(number) {
    if (this.filter.value) { this.filter.value = ''; this.load(); return; }
    const i = this.rows.findIndex((r) => r.kind === 'rule' && r.index === number - 1);
    if (i >= 0) { this.select(i); this.scroller.focus(); }
  }

  async toggle(rule) {
    await this.change('set-access-rule', { uid: rule.uid, enabled: rule.enabled === false });
  }

  async remove(rule) {
    const yes = h('button', { type: 'button', class: 'danger', onclick: async () => {
      dialog.close();
      await this.change('delete-access-rule', { uid: rule.uid });
    } }, 'Delete');
    const dialog = openDialog(`Delete rule ${rule['rule-number']}?`, h('div', null,
      h('p', null, `Delete rule ${rule['rule-number']} `, h('q', null, rule.name || '(no name)'), ' in this session?'),
      yes, h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')));
    yes.focus();
  }

  async change(command, params) {
    try {
      await this.ctx.api.call(command, params);
    } catch (err) {
      this.total.textContent = err.message;
    }
    this.ctx.sessionChanged();
  }

  // Add (rule null) or edit a rule; API errors are shown next to their fields.
  edit(rule) {
    const input = (name, value) => h('input', { name, value: value ?? '' });
    const select = (name, options, value) => h('select', { name },
      options.map((o) => h('option', { value: o, selected: o === value }, o)));
    const form = h('form', { class: 'editor', novalidate: true },
      field('Name', input('name', rule?.name)),
      field('Source', input('source', names(rule?.source)), 'object names, separated by commas; empty for Any'),
      field('Destination', input('destination', names(rule?.destination))),
      field('Service', input('service', names(rule?.service))),
      field('Action', select('action', ['Accept', 'Drop', 'Reject'], rule?.action?.name || 'Accept')),
      field('Track', select('track', ['None', 'Log'], rule?.track?.type?.name || 'Log')),
      field('Enabled', h('input', { name: 'enabled', type: 'checkbox', checked: rule ? rule.enabled !== false : true })),
      field('Comments', input('comments', rule?.comments)),
      field(rule ? 'Move to rule number' : 'Position', input(rule ? 'new-position' : 'position', rule ? '' : 'bottom'),
        rule ? 'empty to keep its place' : 'top, bottom or a rule number'),
      h('p', { class: 'form-error', role: 'alert', hidden: true }),
      h('button', { type: 'submit', class: 'primary' }, rule ? 'Save' : 'Add'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      const params = ruleParams(form, rule);
      try {
        await this.ctx.api.call(rule ? 'set-access-rule' : 'add-access-rule', params);
      } catch (err) {
        showFormError(form, err);
        return;
      }
      dialog.close();
      this.ctx.sessionChanged();
    });
    const dialog = openDialog(rule ? `Edit rule ${rule['rule-number']}` : 'Add a rule', form,
      { onClose: () => this.scroller.focus() });
    form.elements.name.focus();
  }
}

function ruleParams(form, rule) {
  const f = form.elements;
  const list = (name) => { const items = splitNames(f[name].value); return items.length ? items : ['Any']; };
  const params = {
    name: f.name.value, source: list('source'), destination: list('destination'), service: list('service'),
    action: f.action.value, track: f.track.value, enabled: f.enabled.checked, comments: f.comments.value,
  };
  const place = (rule ? f['new-position'] : f.position).value.trim();
  const position = /^\d+$/.test(place) ? Number(place) : place;
  if (rule) {
    delete params.name;
    if (f.name.value !== (rule.name || '')) params['new-name'] = f.name.value;
    params.uid = rule.uid;
    if (place) params['new-position'] = position;
  } else {
    params.layer = 'Network';
    params.position = position || 'bottom';
  }
  return params;
}

function signature(rule) {
  const { 'rule-number': _, ...rest } = rule;
  return JSON.stringify(rest);
}

// Rows from show-layer-structure: the rules before the first section, then each section
// and its rules (empty sections too).
export function layoutRows(structure) {
  const total = structure['root-section']?.['to-rule'] || 0;
  const sections = structure['root-section']?.children || [];
  const starts = sections.filter((s) => s['from-rule']).map((s) => s['from-rule']);
  const top = starts.length ? Math.min(...starts) - 1 : total;
  const rows = [];
  for (let i = 0; i < top; i++) rows.push({ kind: 'rule', index: i });
  for (const section of sections) {
    rows.push({ kind: 'section', uid: section.uid, name: section.name });
    if (section['from-rule']) {
      for (let n = section['from-rule']; n <= section['to-rule']; n++) rows.push({ kind: 'rule', index: n - 1 });
    }
  }
  return rows;
}

customElements.define('crd-rulebase', RulebasePage);
