// The connection to the server and the requests sent on it (docs/protocol.md).
//
// - Each incoming frame type has exactly one handler, registered with on(type, fn) by
//   the module that owns it; unknown types are ignored (a newer server may send more).
// - Every request goes out with a fresh ref, remembered in the state with what its
//   error handler needs. An `error` frame goes to the handler registered for the type
//   of the request it answers (onRequestError); unless that handler returns ALERTED
//   (it showed its own alert), the error is shown as errors.js describes it. onError
//   listeners run after that.
// - The navbar's connection indicator shows the socket's status (socket.js).

import { ReconnectingSocket } from "./socket.js";
import { describeError } from "./errors.js";

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

/** Returned by a request's error handler that has shown its own alert. */
export const ALERTED = "alerted";

const OFFLINE_ALERT = {
  code: "offline",
  text: "You're not connected, so that could not be done. Wait for the connection to come back.",
};

export class Connection {
  constructor({ url, state, alerts, indicator }) {
    this.state = state;
    this.alerts = alerts;
    this.indicator = indicator;
    this.handlers = new Map(); // frame type -> handler(frame)
    this.requestErrorHandlers = new Map(); // request type -> handler(frame, request), may return ALERTED
    this.errorListeners = [];
    this.statusListeners = [];
    this.onHandlerFailure = () => {};
    this.socket = new ReconnectingSocket(url, {
      onFrame: (frame) => this.dispatch(frame),
      onStatus: (status, detail) => this.onStatus(status, detail),
    });
    this.on("error", (frame) => this.onErrorFrame(frame));
    this.on("pong", () => {});
  }

  /** True when a request sent now goes out. */
  get connected() {
    return this.socket.connected;
  }

  /** Grows by one for every new connection: tells a message sent on an earlier one. */
  get connectionId() {
    return this.socket.connectionId;
  }

  start() {
    this.socket.start();
  }

  on(type, handler) {
    if (this.handlers.has(type)) throw new Error(`connection: the frame type ${type} already has a handler`);
    this.handlers.set(type, handler);
  }

  onRequestError(requestType, handler) {
    if (this.requestErrorHandlers.has(requestType)) throw new Error(`connection: ${requestType} errors already have a handler`);
    this.requestErrorHandlers.set(requestType, handler);
  }

  /** listener(frame, request) after each error frame has been handled and shown. */
  onError(listener) {
    this.errorListeners.push(listener);
  }

  /** listener(status) after each change of the connection's status. */
  onStatusChange(listener) {
    this.statusListeners.push(listener);
  }

  /** Sends a request with a fresh ref; returns the ref, or null (and says so) when offline. */
  send(type, fields, info = {}) {
    const ref = this.sendQuietly(type, fields, info);
    if (ref === null) this.alerts.show(OFFLINE_ALERT);
    return ref;
  }

  /** Like send(), without the alert when offline. */
  sendQuietly(type, fields, info = {}) {
    const ref = this.state.trackRequest(type, info);
    if (this.socket.send({ type, ...fields, ref })) return ref;
    this.state.takeRequest(ref);
    return null;
  }

  dispatch(frame) {
    const handler = this.handlers.get(frame.type);
    if (!handler) return;
    try {
      handler(frame);
    } catch (error) {
      console.error("chat: failed to handle a frame", frame.type, error);
      this.onHandlerFailure(frame);
    }
  }

  onErrorFrame(frame) {
    const request = this.state.takeRequest(frame.ref);
    const handler = request ? this.requestErrorHandlers.get(request.type) : null;
    const alerted = handler ? handler(frame, request) === ALERTED : false;
    if (!alerted) this.alerts.show(describeError(frame, this.state.limits, request ? request.type : null));
    for (const listener of this.errorListeners) listener(frame, request);
  }

  onStatus(status, detail) {
    const wasSignedOut = this.state.connectionReason === "signed-out";
    this.state.setConnection(status, detail.reason);
    this.renderIndicator(status, detail);
    if (status === "offline" && detail.reason === "signed-out" && !wasSignedOut) {
      this.alerts.show({ code: "signed_out", text: "You're signed out. Reload the page to sign in again.", persistent: true });
    }
    for (const listener of this.statusListeners) listener(status);
  }

  renderIndicator(status, detail) {
    const indicator = this.indicator;
    indicator.dataset.state = status;
    indicator.dataset.reason = detail.reason || "";
    let text = STATUS_TEXT[status] || status;
    if (status === "offline" && detail.reason === "signed-out") text = "Signed out";
    indicator.querySelector(".status-text").textContent = text;
    let title = text;
    if (status === "reconnecting" && detail.delay) title = `Connection lost. Trying again in ${Math.max(1, Math.round(detail.delay / 1000))} s.`;
    indicator.title = title;
  }
}
