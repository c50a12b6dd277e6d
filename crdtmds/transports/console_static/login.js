// Login: user and password, then the domain (typed, or picked from the administrator's
// domains after a first, system-wide login).

import { h, clear, field } from './dom.js';

class LoginPage extends HTMLElement {
  connectedCallback() {
    this.user = h('input', { name: 'user', autocomplete: 'username', required: true });
    this.password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    this.domain = h('input', { name: 'domain', placeholder: 'leave empty to pick one' });
    this.error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.form = h('form', { class: 'login', onsubmit: (e) => { e.preventDefault(); this.submit(); } },
      h('h1', null, 'crdtmds console'),
      this.message ? h('p', { class: 'notice', role: 'status' }, this.message) : null,
      field('User', this.user), field('Password', this.password), field('Domain', this.domain),
      this.error, h('button', { type: 'submit' }, 'Log in'));
    clear(this, this.form);
    this.user.focus();
  }

  fail(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }

  async submit() {
    this.error.hidden = true;
    const domain = this.domain.value.trim();
    try {
      const reply = await this.api.logIn(this.user.value, this.password.value, domain || null);
      if (domain || reply.domain) return this.done();
      const domains = await this.api.all('show-domains');
      if (domains.length === 1) return this.enter(domains[0].name);
      if (domains.length === 0) return this.done();
      this.pick(domains);
    } catch (err) {
      this.fail(err.message);
    }
  }

  // Several domains: the picker, then a login to the one picked.
  pick(domains) {
    const select = h('select', { name: 'picked' },
      domains.map((d) => h('option', { value: d.name }, d.name)));
    const form = h('form', { class: 'login', onsubmit: (e) => { e.preventDefault(); this.enter(select.value); } },
      h('h1', null, 'Choose a domain'), field('Domain', select), this.error,
      h('button', { type: 'submit' }, 'Open'));
    clear(this, form);
    select.focus();
  }

  async enter(domain) {
    try {
      await this.api.call('logout').catch(() => {});
      await this.api.logIn(this.user.value, this.password.value, domain);
      this.done();
    } catch (err) {
      this.fail(err.message);
    }
  }

  done() {
    this.dispatchEvent(new CustomEvent('logged-in'));
  }
}

customElements.define('crd-login', LoginPage);
