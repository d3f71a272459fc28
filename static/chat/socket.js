// A WebSocket that reconnects by itself.
//
// - Reconnects with exponential backoff and jitter: 0.5 s doubling to 15 s, ±30 %.
//   The backoff is reset once the server has said `hello` on a connection.
// - Sends `ping` every 25 s; a connection that has delivered no frame at all (not even
//   the `pong`) within 10 s of a ping is treated as dead and replaced. (Measured from
//   the ping, not by wall clock, so that timers throttled in a background tab do not
//   condemn a healthy connection.)
// - Reconnects at once when the browser comes back online or the tab becomes visible
//   again (a backgrounded mobile tab often has its socket killed).
// - Close code 4401 (not signed in) stops reconnecting: retrying cannot help.
//
// Status values passed to onStatus(status, detail):
//   "connecting"   first connection attempt of the page
//   "connected"    the server has sent its first frame (`hello`) on this connection
//   "reconnecting" waiting for or making another attempt; detail.delay is the wait in ms
//   "offline"      not trying: detail.reason is "browser-offline" or "signed-out"

export const CLOSE_UNAUTHENTICATED = 4401;

export class ReconnectingSocket {
  constructor(url, {
    onFrame = () => {},
    onStatus = () => {},
    pingInterval = 25000,
    pongTimeout = 10000,
    minDelay = 500,
    maxDelay = 15000,
    jitter = 0.3,
  } = {}) {
    this.url = url;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.pingInterval = pingInterval;
    this.pongTimeout = pongTimeout;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.jitter = jitter;

    this.ws = null;
    this.status = "connecting";
    this.attempt = 0;            // failed attempts since the last good connection
    this.connectionId = 0;       // grows by one for every connection that opened
    this.lastFrameAt = 0;
    this.pingSentAt = 0;         // 0: no ping awaiting an answer
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = false;
    this.greeted = false;        // the current connection has delivered its first frame
  }

  /** True when a frame sent now goes out on an open, greeted connection. */
  get connected() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN && this.greeted);
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => {
      if (!this.connected) this.setStatus("offline", { reason: "browser-offline" });
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      if (this.connected) {
        this.checkAlive();
        setTimeout(() => this.checkAlive(), this.pongTimeout + 250);
      } else {
        this.reconnectNow();
      }
    });
    this.connect();
  }

  /** Sends one frame; returns false (and sends nothing) when not connected. */
  send(frame) {
    if (!this.connected) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Skips the backoff wait: used when the network or the tab comes back. */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attempt = 0;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.greeted = false;
    this.setStatus(this.connectionId === 0 && this.attempt === 0 ? "connecting" : "reconnecting", {});
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.connectionId += 1;
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      this.startPinging();
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not JSON: ignore
      }
      if (!frame || typeof frame.type !== "string") return;
      if (!this.greeted) {
        this.greeted = true;
        this.attempt = 0;
        this.setStatus("connected", {});
      }
      this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.dropConnection();
      if (event.code === CLOSE_UNAUTHENTICATED) {
        this.stopped = true;
        this.setStatus("offline", { reason: "signed-out" });
        return;
      }
      this.scheduleReconnect();
    });
    // "error" is always followed by "close", which does the work.
  }

  /** Forgets the current connection without waiting for its close handshake. */
  dropConnection() {
    const ws = this.ws;
    this.ws = null;
    this.greeted = false;
    this.stopPinging();
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close();
      } catch {
        /* already closing */
      }
    }
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    if (navigator.onLine === false) {
      // The "online" event calls reconnectNow().
      this.setStatus("offline", { reason: "browser-offline" });
      return;
    }
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = Math.round(base * (1 + (Math.random() * 2 - 1) * this.jitter));
    this.attempt += 1;
    this.setStatus("reconnecting", { delay });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  startPinging() {
    this.stopPinging();
    this.pingTimer = setInterval(() => this.checkAlive(), this.pingInterval);
  }

  stopPinging() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  /** Pings, and replaces a connection that did not answer the previous ping in time. */
  checkAlive() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    const awaitingAnswer = this.pingSentAt > 0 && this.lastFrameAt < this.pingSentAt;
    if (awaitingAnswer) {
      if (now - this.pingSentAt > this.pongTimeout) {
        this.dropConnection();
        this.scheduleReconnect();
      }
      return;
    }
    try {
      this.ws.send(JSON.stringify({ type: "ping" }));
      this.pingSentAt = now;
    } catch {
      /* the close event follows */
    }
  }

  setStatus(status, detail) {
    this.status = status;
    this.onStatus(status, detail || {});
  }
}
