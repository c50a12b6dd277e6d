// The live event stream (GET /console/events, server-sent events) read with fetch, so
// that the sid travels in the X-chkp-sid header, never in a URL. Reconnects with a
// growing pause; `state` events say whether it is live.

export class LiveStream extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.state = 'connecting';
    this.stopped = true;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.setState('connecting');
    this.run();
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  async run() {
    const run = (this.runs = (this.runs || 0) + 1); // a stop and a start end the older loop
    const current = () => !this.stopped && run === this.runs;
    let pause = 500;
    while (current()) {
      const abort = new AbortController();
      this.abort = abort;
      try {
        const response = await fetch('/console/events', {
          headers: { 'X-chkp-sid': this.api.sid || '' }, signal: abort.signal, cache: 'no-store',
        });
        if (response.status === 401) {
          this.api.expire('the login ended or expired');
          break;
        }
        if (response.ok) {
          pause = 500;
          await this.read(response.body);
        }
      } catch {
        if (!current()) break;
      }
      if (!current()) break;
      this.setState('reconnecting');
      await new Promise((done) => setTimeout(done, pause));
      pause = Math.min(pause * 2, 5000);
    }
    if (run === this.runs) this.setState('stopped');
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        this.handle(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  handle(block) {
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).trim();
    }
    if (!data) return;
    const detail = JSON.parse(data);
    if (event === 'ready') this.setState('live');
    if (event === 'ended') {
      this.stop();
      this.api.expire(detail.message);
      return;
    }
    this.dispatchEvent(new CustomEvent(event, { detail }));
  }
}
