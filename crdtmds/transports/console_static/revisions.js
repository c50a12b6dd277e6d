// Published revisions, newest first: who, when, comment, change count; a revision's
// details; revert to one (a new revision, published at once).

import { h, clear, openDialog } from './dom.js';
import { renderChanges } from './session.js';

class RevisionsPage extends HTMLElement {
  connectedCallback() {
    this.status = h('p', { class: 'total', role: 'status' });
    this.list = h('div');
    clear(this, h('h2', null, 'Revisions'), this.status, this.list);
    this.onDomain = () => this.load();
    this.ctx.live.addEventListener('domain', this.onDomain);
    this.addEventListener('session-changed', () => this.load());
    this.load();
  }

  disconnectedCallback() {
    this.ctx.live.removeEventListener('domain', this.onDomain);
  }

  async load() {
    let revisions;
    try {
      revisions = await this.ctx.api.all('show-revisions');
    } catch (err) {
      this.status.textContent = err.message;
      return;
    }
    this.status.textContent = `${revisions.length} revisions`;
    clear(this.list, h('table', { class: 'objects revisions' },
      h('thead', null, h('tr', null, ['When', 'Who', 'Server', 'Comment', 'Changes', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, revisions.map((r, i) => h('tr', { dataset: { uid: r.uid } },
        h('td', null, new Date(r['published-at']).toLocaleString()),
        h('td', null, r.admin), h('td', null, r.server),
        h('td', { class: 'comments' }, r.comments || ''), h('td', null, r.changes),
        h('td', { class: 'actions' },
          h('button', { type: 'button', onclick: () => this.details(r), 'aria-label': `Changes of the revision of ${r['published-at']}` }, 'Changes'),
          i === 0 ? null : h('button', { type: 'button', class: 'danger', onclick: () => this.revert(r),
            'aria-label': `Revert to the revision of ${r['published-at']}` }, 'Revert to this')))))));
  }

  // Who, when and what: the changes this revision published.
  async details(revision) {
    const changes = h('div', { class: 'diff' }, 'Loading…');
    openDialog(`Revision of ${new Date(revision['published-at']).toLocaleString()}`, h('div', null,
      h('dl', null, ['admin', 'server', 'comments', 'changes', 'uid'].map((k) =>
        [h('dt', null, k), h('dd', null, String(revision[k] ?? ''))])),
      h('h3', null, 'Changes'), changes));
    try {
      renderChanges(changes, await this.ctx.api.call('show-changes', { 'to-session': revision.uid }));
    } catch (err) {
      clear(changes, h('p', { class: 'form-error' }, err.message));
    }
  }

  revert(revision) {
    const outcome = h('p', { role: 'status' });
    const yes = h('button', { type: 'button', class: 'danger', onclick: async () => {
      yes.disabled = true;
      try {
        const reply = await this.ctx.api.call('revert-to-revision', { 'to-revision': revision.uid });
        const task = await this.ctx.api.waitForTask(reply['task-id']);
        dialog.close();
        this.status.textContent = `revert ${task.status}`;
      } catch (err) {
        outcome.textContent = err.message;
        yes.disabled = false;
        return;
      }
      this.ctx.sessionChanged();
    } }, 'Revert');
    const dialog = openDialog('Revert?', h('div', null,
      h('p', null, `Make the domain what it was at ${new Date(revision['published-at']).toLocaleString()}`,
        ' (published as a new revision at once)?'), outcome, yes,
      h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')));
    yes.focus();
  }
}

customElements.define('crd-revisions', RevisionsPage);
