// The side panel: an object's fields, its members, and where it is used.

import { h, clear, names } from './dom.js';

const HIDDEN = new Set(['uid', 'domain', 'type', 'name', 'meta-info', 'read-only', 'icon']);

export class ObjectPanel {
  constructor(api, onRule) {
    this.api = api;
    this.onRule = onRule;
    this.element = h('aside', { class: 'panel', 'aria-label': 'Object details', hidden: true });
  }

  async show(uid) {
    this.element.hidden = false;
    clear(this.element, h('p', null, 'Loading…'));
    try {
      const [{ object }, used] = await Promise.all([
        this.api.call('show-object', { uid }),
        this.api.call('where-used', { uid }).catch(() => null),
      ]);
      this.render(object, used);
    } catch (err) {
      clear(this.element, h('p', { class: 'form-error' }, err.message));
    }
  }

  render(object, used) {
    const rows = Object.entries(object).filter(([key]) => !HIDDEN.has(key)).map(([key, value]) => [
      h('dt', null, key),
      h('dd', null, Array.isArray(value) ? names(value) : typeof value === 'object' && value ? JSON.stringify(value) : String(value)),
    ]);
    const direct = used?.['used-directly'];
    clear(this.element,
      h('header', null, h('h2', null, object.name ?? object.uid),
        h('button', { type: 'button', class: 'close', 'aria-label': 'Close the panel',
          onclick: () => { this.element.hidden = true; } }, '×')),
      h('p', { class: 'type' }, object.type),
      h('dl', null, rows),
      direct ? h('section', null, h('h3', null, `Where used (${direct.total})`),
        h('ul', null,
          direct.objects.map((o) => h('li', null, `${o.type} `, h('q', null, o.name))),
          direct['access-control-rules'].map((r) => h('li', null,
            h('button', { type: 'button', class: 'link', onclick: () => this.onRule(r.position) },
              `rule ${r.position}`), ` ${r.rule.name || ''} (${r['rule-columns'].join(', ')})`))))
        : null);
  }
}
