// The console's only ways into a server: POST /web_api/COMMAND with the login's sid in
// X-chkp-sid, and the live event stream of live.js.

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || 'generic_error';
    this.errors = body.errors || [];
  }
}

const STORE = 'crdtmds.console.login';

export class Api extends EventTarget {
  constructor() {
    super();
    const kept = JSON.parse(sessionStorage.getItem(STORE) || 'null');
    this.login = kept; // {sid, user, domain, server}
  }

  get sid() { return this.login?.sid || null; }

  async call(command, params = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (this.sid && command !== 'login') headers['X-chkp-sid'] = this.sid;
    let response;
    try {
      response = await fetch(`/web_api/${command}`, {
        method: 'POST', headers, body: JSON.stringify(params), cache: 'no-store',
      });
    } catch (err) {
      throw new ApiError(0, { code: 'err_unreachable', message: `the server did not answer (${err.message})` });
    }
    let body;
    try { body = await response.json(); } catch { body = { message: `HTTP ${response.status}` }; }
    if (!response.ok) {
      const error = new ApiError(response.status, body);
      if (response.status === 401 && command !== 'login' && this.sid) this.expire(error.message);
      throw error;
    }
    return body;
  }

  async logIn(user, password, domain) {
    const params = { user, password, 'session-name': 'console' };
    if (domain) params.domain = domain;
    const reply = await this.call('login', params);
    this.remember({ sid: reply.sid, user, domain: reply.domain?.name || null, server: reply.server });
    return reply;
  }

  remember(login) {
    this.login = login;
    if (login) sessionStorage.setItem(STORE, JSON.stringify(login));
    else sessionStorage.removeItem(STORE);
  }

  async logOut() {
    try { await this.call('logout'); } catch { /* gone already */ }
    this.remember(null);
    this.dispatchEvent(new CustomEvent('logged-out'));
  }

  expire(message) {
    if (!this.login) return;
    this.remember(null);
    this.dispatchEvent(new CustomEvent('expired', { detail: message }));
  }

  // Every page of a list command (limit 500 per call).
  async all(command, params = {}, key = 'objects') {
    const items = [];
    for (let offset = 0; ; offset += 500) {
      const reply = await this.call(command, { ...params, offset, limit: 500 });
      items.push(...reply[key]);
      if (reply.to >= reply.total || reply[key].length === 0) return items;
    }
  }

  async waitForTask(taskId, onProgress) {
    for (let i = 0; ; i++) {
      const reply = await this.call('show-task', { 'task-id': taskId });
      const task = reply.tasks[0];
      onProgress?.(task);
      if (task.status !== 'in progress') return task;
      await new Promise((done) => setTimeout(done, Math.min(100 * 2 ** i, 1000)));
    }
  }
}
