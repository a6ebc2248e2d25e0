// GET /api/v1/stream: one WebSocket, reopened after every loss with an
// exponential back-off and jitter. Each (re)open starts with a `resume`
// listing the rev held of every known conversation, so the server sends
// exactly what was missed; the connection counts as online once `resumed`
// arrives.

const BASE_MS = 500; // first retry after 0.25-0.5 s
const MAX_MS = 15000; // retries at most 7.5-15 s apart
const OPEN_TIMEOUT_MS = 10000; // a handshake that hangs this long is given up

export class Stream {
  // handlers: positions() -> {convId: rev}, frame(obj), state(name, info)
  constructor(token, handlers) {
    this.token = token;
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.openTimer = null;
    this.stopped = true;
    this.online = false;
    this.onNetworkBack = () => {
      if (!this.online) this.reconnectNow();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onNetworkBack);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onNetworkBack);
    clearTimeout(this.timer);
    clearTimeout(this.openTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "signed out");
    }
    this.online = false;
  }

  // Sends a frame when the socket is open and resumed; false otherwise.
  send(frame) {
    if (!this.ws || !this.online || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    if (this.ws) {
      this.drop(this.ws);
    }
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/v1/stream?token=${encodeURIComponent(this.token)}`;
  }

  connect() {
    if (this.stopped) return;
    this.h.state("connecting", {});
    const ws = new WebSocket(this.url());
    this.ws = ws;
    this.openTimer = setTimeout(() => {
      if (this.ws === ws && ws.readyState !== WebSocket.OPEN) this.lost(ws);
    }, OPEN_TIMEOUT_MS);
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      clearTimeout(this.openTimer);
      const positions = {};
      for (const [id, rev] of Object.entries(this.h.positions())) positions[id] = rev;
      ws.send(JSON.stringify({ type: "resume", positions }));
    });
    ws.addEventListener("message", (ev) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame.type === "resumed") {
        this.online = true;
        this.attempt = 0;
        this.h.state("online", {});
      }
      this.h.frame(frame);
    });
    ws.addEventListener("close", () => this.lost(ws));
    // an "error" event is always followed by "close"
  }

  // Forgets a socket without scheduling anything.
  drop(ws) {
    if (this.ws === ws) this.ws = null;
    clearTimeout(this.openTimer);
    try {
      ws.close();
    } catch {
      /* already closed */
    }
  }

  lost(ws) {
    if (this.ws !== ws) return;
    this.drop(ws);
    this.online = false;
    if (this.stopped) return;
    const cap = Math.min(MAX_MS, BASE_MS * 2 ** this.attempt);
    const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
    this.attempt++;
    this.h.state("offline", { delay, at: Date.now() + delay, attempt: this.attempt });
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
