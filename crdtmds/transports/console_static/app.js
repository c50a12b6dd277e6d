// The console's shell: login, or the pages of one domain under a header, a navigation
// bar and the session bar. Pages are chosen by the URL's fragment (#/rulebase, ...).

import { Api } from './api.js';
import { LiveStream } from './live.js';
import { h, clear } from './dom.js';
import './login.js';
import './session.js';
import './rulebase.js';
import './objects.js';
import './revisions.js';
import './cluster.js';

const PAGES = [
  ['rulebase', 'Rulebase', 'crd-rulebase'],
  ['objects', 'Objects', 'crd-objects'],
  ['revisions', 'Revisions', 'crd-revisions'],
  ['cluster', 'Cluster', 'crd-cluster'],
];

class ConsoleApp extends HTMLElement {
  connectedCallback() {
    this.api = new Api();
    this.live = new LiveStream(this.api);
    this.api.addEventListener('expired', (e) => this.showLogin(
      `Your login ended or expired (${e.detail}). Log in again.`));
    this.api.addEventListener('logged-out', () => this.showLogin('You are logged out.'));
    window.addEventListener('hashchange', () => this.route());
    this.live.addEventListener('state', (e) => {
      if (!this.liveBadge) return;
      this.liveBadge.textContent = e.detail;
      this.liveBadge.dataset.state = e.detail;
    });
    if (this.api.sid) this.showMain(); else this.showLogin();
  }

  showLogin(message) {
    this.live.stop();
    const login = h('crd-login');
    login.api = this.api;
    login.message = message;
    login.addEventListener('logged-in', () => this.showMain());
    clear(this, login);
  }

  showMain() {
    const { user, domain, server } = this.api.login;
    this.liveBadge = h('span', { class: 'live-state', role: 'status', 'aria-live': 'polite',
      dataset: { state: this.live.state } }, this.live.state);
    this.nav = h('nav', { 'aria-label': 'Pages' }, PAGES.map(([id, label]) =>
      h('a', { href: `#/${id}`, dataset: { page: id } }, label)));
    const sessionBar = h('crd-session-bar');
    sessionBar.ctx = this;
    this.main = h('main', { id: 'page' });
    clear(this,
      h('header', { class: 'top' },
        h('h1', null, 'crdtmds'),
        h('span', { class: 'where' }, `${user} @ ${domain || 'system'} on server ${server}`),
        this.liveBadge,
        h('button', { type: 'button', onclick: () => this.api.logOut() }, 'Log out')),
      this.nav, sessionBar, this.main);
    this.sessionBar = sessionBar;
    this.live.start();
    this.route();
  }

  route() {
    if (!this.api.sid || !this.main) return;
    const id = (location.hash.match(/^#\/([a-z]+)/) || [])[1] || 'rulebase';
    const page = PAGES.find(([name]) => name === id) || PAGES[0];
    for (const link of this.nav.querySelectorAll('a')) {
      if (link.dataset.page === page[0]) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const element = h(page[2]);
    element.ctx = this;
    clear(this.main, element);
  }

  // A page changed the session (an edit, a publish, a discard): the session bar counts.
  sessionChanged() {
    this.sessionBar?.refresh();
    this.main?.firstElementChild?.dispatchEvent(new CustomEvent('session-changed'));
  }
}

customElements.define('crd-console', ConsoleApp);
