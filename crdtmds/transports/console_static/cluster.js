// The cluster as this server sees it: every server (region, role, reachable, last
// heard), per domain whether every server holds the same heads or how far behind each
// is, a live plot of publish -> visible everywhere, and the policy check's findings.

import { h, clear } from './dom.js';
import { ObjectPanel } from './panel.js';

const POLL_MS = 2000;
const FAST_POLL_MS = 200;
const SVG = 'http://www.w3.org/2000/svg';
const latencies = []; // [{at, ms}], kept while the page is open in this tab

class ClusterPage extends HTMLElement {
  connectedCallback() {
    this.servers = h('div');
    this.domains = h('div');
    this.plot = h('figure', { class: 'plot' });
    this.findings = h('div');
    this.panel = new ObjectPanel(this.ctx.api, () => {});
    clear(this, h('div', { class: 'with-panel' }, h('div', { class: 'cluster' },
      h('h2', null, 'Servers'), this.servers,
      h('h2', null, 'Domains'), this.domains,
      h('h2', null, 'Publish → visible on every server'), this.plot,
      h('h2', null, 'Policy check'), this.findings), this.panel.element));
    this.onDomain = (e) => { if (e.detail.origin === 'here') this.watch(e.detail); this.verify(); };
    this.ctx.live.addEventListener('domain', this.onDomain);
    this.alive = true;
    this.drawPlot();
    this.poll();
    this.verify();
  }

  disconnectedCallback() {
    this.alive = false;
    clearTimeout(this.timer);
    this.ctx.live.removeEventListener('domain', this.onDomain);
  }

  async poll() {
    clearTimeout(this.timer);
    try {
      this.render(await this.ctx.api.call('show-cluster-status'));
    } catch (err) {
      clear(this.servers, h('p', { class: 'form-error' }, err.message));
    }
    if (this.alive) this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  // A publish here: time until every server reports the heads it made.
  async watch(event) {
    const started = performance.now();
    while (this.alive && performance.now() - started < 30000) {
      let report;
      try { report = await this.ctx.api.call('show-cluster-status', { timeout: 1000 }); } catch { return; }
      const heads = Object.values(report.domains[event.domain]?.heads || {});
      const wanted = event.heads.join();
      if (heads.length && heads.every((hs) => hs && event.heads.every((x) => hs.includes(x)))) {
        latencies.push({ at: Date.now(), ms: performance.now() - started, wanted });
        if (latencies.length > 40) latencies.shift();
        this.drawPlot();
        return;
      }
      await new Promise((done) => setTimeout(done, FAST_POLL_MS));
    }
  }

  render(report) {
    const now = Date.now() / 1000;
    clear(this.servers, h('table', { class: 'objects servers' },
      h('thead', null, h('tr', null, ['Server', 'Region', 'Role', 'Reachable', 'Last heard', 'Linked with'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, report.servers.map((s) => h('tr', { dataset: { server: s.name, reachable: String(s.reachable) },
        class: s.reachable ? 'up' : 'down' },
      h('td', null, s.name, s['this-server'] ? ' (this server)' : ''), h('td', null, s.region ?? ''),
      h('td', null, s.role ?? ''),
      h('td', { class: 'reachable' }, s.reachable ? 'reachable' : `unreachable${s.error ? `: ${s.error}` : ''}`),
      h('td', null, s['this-server'] ? 'now' : s['last-heard'] ? `${Math.round(now - s['last-heard'])} s ago` : 'never'),
      h('td', null, (s.peers || []).join(', ')))))));
    const names = report.servers.map((s) => s.name);
    clear(this.domains, h('table', { class: 'objects domains' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Domain'), names.map((n) => h('th', { scope: 'col' }, n)))),
      h('tbody', null, Object.entries(report.domains).map(([name, d]) => h('tr', { dataset: { domain: name, converged: String(d.converged) } },
        h('td', null, name, d.converged ? ' — identical everywhere' : ''),
        names.map((n) => h('td', { dataset: { server: n } }, headsText(d, n))))))));
  }

  drawPlot() {
    const width = 400;
    const height = 120;
    const max = Math.max(500, ...latencies.map((l) => l.ms));
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', 'publish to visible-everywhere latency, milliseconds');
    const step = width / 40;
    latencies.forEach((l, i) => {
      const bar = document.createElementNS(SVG, 'rect');
      const barHeight = Math.max(2, (l.ms / max) * (height - 20));
      bar.setAttribute('x', i * step + 1);
      bar.setAttribute('y', height - barHeight);
      bar.setAttribute('width', step - 2);
      bar.setAttribute('height', barHeight);
      const title = document.createElementNS(SVG, 'title');
      title.textContent = `${Math.round(l.ms)} ms`;
      bar.append(title);
      svg.append(bar);
    });
    const last = latencies.at(-1);
    clear(this.plot, svg, h('figcaption', null, last
      ? `last ${Math.round(last.ms)} ms; scale 0–${Math.round(max)} ms; measured by this console (polling every ${FAST_POLL_MS} ms)`
      : 'no publish seen yet on this page: publish in this domain to measure'));
  }

  async verify() {
    try {
      const reply = await this.ctx.api.call('verify-policy');
      clear(this.findings, reply.total === 0 ? h('p', null, 'No findings.') : h('ul', null, reply.problems.map((p) => h('li', null,
        `${p.type}${p.name ? ` “${p.name}”` : ''}${p.field ? ` in ${p.field}` : ''}: `,
        [...(p.uids || []), ...(p.holder ? [p.holder.uid] : [])].map((uid) => h('button', { type: 'button', class: 'link',
          onclick: () => this.panel.show(uid) }, uid)),
        p.missing ? ` → missing ${p.missing}` : ''))));
    } catch (err) {
      clear(this.findings, h('p', null, err.message));
    }
  }
}

function headsText(domain, server) {
  const heads = domain.heads[server];
  if (heads === null || heads === undefined) return 'unknown (unreachable)';
  const behind = domain['changes-behind']?.[server];
  if (behind === 0) return 'identical';
  if (behind === null || behind === undefined) return 'has changes this server lacks';
  return `${behind} change${behind === 1 ? '' : 's'} behind`;
}

customElements.define('crd-cluster', ClusterPage);
