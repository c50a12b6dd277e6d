// The session bar: unpublished changes, show-changes as a readable diff, publish with
// its task's progress, discard.

import { h, clear, field, openDialog } from './dom.js';

class SessionBar extends HTMLElement {
  connectedCallback() {
    this.setAttribute('role', 'region');
    this.setAttribute('aria-label', 'Session');
    this.count = h('span', { class: 'change-count', role: 'status', 'aria-live': 'polite' }, '…');
    this.progress = h('span', { class: 'task', role: 'status', 'aria-live': 'polite' });
    clear(this, this.count,
      h('button', { type: 'button', onclick: () => this.showChanges() }, 'Changes'),
      h('button', { type: 'button', class: 'primary', onclick: () => this.publishDialog() }, 'Publish'),
      h('button', { type: 'button', onclick: () => this.discard() }, 'Discard'),
      this.progress);
    this.refresh();
  }

  async refresh() {
    try {
      const session = await this.ctx.api.call('show-session');
      this.changes = session.changes;
      this.count.textContent = `${session.changes} unpublished change${session.changes === 1 ? '' : 's'}`;
      this.count.dataset.count = session.changes;
    } catch (err) {
      this.count.textContent = err.message;
    }
  }

  async showChanges() {
    const body = h('div', { class: 'diff' }, 'Loading…');
    openDialog('Unpublished changes', body);
    try {
      const reply = await this.ctx.api.call('show-changes');
      renderChanges(body, reply);
    } catch (err) {
      clear(body, h('p', { class: 'form-error' }, err.message));
    }
  }

  publishDialog() {
    const comments = h('input', { name: 'comments' });
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const form = h('form', { onsubmit: async (e) => {
      e.preventDefault();
      dialog.close();
      await this.publish(comments.value);
    } }, field('Comment', comments), error,
    h('button', { type: 'submit', class: 'primary' }, 'Publish'));
    const dialog = openDialog('Publish the session', form);
    comments.focus();
  }

  async publish(comments) {
    const api = this.ctx.api;
    this.progress.textContent = 'publishing…';
    try {
      const reply = await api.call('publish', comments ? { comments } : {});
      const task = await api.waitForTask(reply['task-id'], (t) => {
        this.progress.textContent = `publish ${t.status} (${t['progress-percentage']}%)`;
      });
      this.progress.textContent = `publish ${task.status}`;
      this.progress.dataset.status = task.status;
    } catch (err) {
      this.progress.textContent = `publish failed: ${err.message}`;
      this.progress.dataset.status = 'failed';
    }
    this.ctx.sessionChanged();
  }

  async discard() {
    const ok = h('button', { type: 'button', class: 'danger', onclick: async () => {
      dialog.close();
      try {
        const reply = await this.ctx.api.call('discard');
        this.progress.textContent = `discarded ${reply['number-of-discarded-changes']} changes`;
      } catch (err) {
        this.progress.textContent = err.message;
      }
      this.ctx.sessionChanged();
    } }, 'Discard');
    const dialog = openDialog('Discard the session?',
      h('div', null, h('p', null, `Throw away ${this.changes ?? 'all'} unpublished changes?`), ok,
        h('button', { type: 'button', onclick: () => dialog.close() }, 'Keep them')));
    ok.focus();
  }
}

function label(item, dictionary) {
  return `${item.type || 'object'} ${item.name ?? dictionary.get(item.uid) ?? item.uid}`;
}

function value(v, dictionary) {
  if (Array.isArray(v)) return v.map((x) => dictionary.get(x) ?? x).join(', ') || '(none)';
  if (v === undefined || v === null || v === '') return '(none)';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

export function renderChanges(body, reply) {
  const dictionary = new Map((reply['objects-dictionary'] || []).map((o) => [o.uid, o.name]));
  const section = (title, items, render) => items.length
    ? h('section', null, h('h3', null, `${title} (${items.length})`), h('ul', null, items.map(render)))
    : null;
  clear(body,
    reply.total === 0 ? h('p', null, 'No unpublished changes.') : null,
    section('Added', reply['added-objects'], (o) => h('li', { class: 'added' }, '+ ', label(o, dictionary))),
    section('Modified', reply['modified-objects'], (o) => h('li', { class: 'modified' }, '~ ', label(o, dictionary),
      h('dl', null, Object.entries(o.fields || {}).map(([name, change]) => [
        h('dt', null, name),
        h('dd', null, h('del', null, value(change.old, dictionary)), ' → ', h('ins', null, value(change.new, dictionary))),
      ])))),
    section('Deleted', reply['deleted-objects'], (o) => h('li', { class: 'deleted' }, '− ', label(o, dictionary))));
}

customElements.define('crd-session-bar', SessionBar);
