// A reply being written: its text arrives as numbered deltas and goes into the
// bubble's two parts, the finished Markdown blocks (.md-done, appended to) and the
// open block (.md-tail, replaced each time). HTML in frames is sanitized by the server;
// a frame without HTML shows its text as text until the reply completes.

import { h } from "./render.js";

/**
 * Starts showing a reply in its message element. From `conversation.state.generating`,
 * `html` is the HTML of the finished blocks and `tail` that of the open block
 * (docs/protocol.md); an {append, tail} object is accepted too. Without HTML, the text
 * so far is shown as text. seq is the next delta expected.
 */
export function openStream(el, { seq, html, tail, content }) {
  const body = el.querySelector(".message-body");
  const stream = { expectedSeq: seq, content, body, done: body.querySelector(".md-done"), tail: body.querySelector(".md-tail") };
  if (html && typeof html === "object") {
    stream.done.innerHTML = html.append || ""; // sanitized by the server
    stream.tail.innerHTML = html.tail || ""; // sanitized by the server
  } else if (typeof html === "string" && (html || tail)) {
    stream.done.innerHTML = html; // sanitized by the server
    stream.tail.innerHTML = typeof tail === "string" ? tail : ""; // sanitized by the server
  } else if (content) {
    stream.done.append(h("div", { className: "message-text", text: content }));
  }
  el.classList.toggle("has-text", content.length > 0);
  return stream;
}

/**
 * `reply.delta`: applied if its seq is the expected one ("ok"); "duplicate" for a seq
 * below (ignored), "gap" for one above (the caller resynchronises).
 */
export function appendDelta(stream, el, frame) {
  const seq = Number(frame.seq);
  if (!Number.isInteger(seq)) return "gap";
  if (seq < stream.expectedSeq) return "duplicate";
  if (seq > stream.expectedSeq) return "gap";
  stream.expectedSeq = seq + 1;
  stream.content += frame.delta || "";
  const html = frame.html;
  if (html && typeof html === "object") {
    if (html.append) stream.done.insertAdjacentHTML("beforeend", html.append); // sanitized by the server
    stream.tail.innerHTML = html.tail || ""; // sanitized by the server
  } else if (frame.delta) {
    stream.tail.append(document.createTextNode(frame.delta));
  }
  el.classList.toggle("has-text", stream.content.length > 0);
  if (el.classList.contains("is-waiting")) showWaiting(el, 0); // the model is writing it now
  return "ok";
}

/**
 * `reply.waiting` (or `generating.waiting`): the reply waits for the local model, which
 * writes one reply at a time; say how many run first instead of "Writing…" (0 or null:
 * the model has started on it).
 */
export function showWaiting(el, ahead) {
  const text = el && el.querySelector(".message-progress-text");
  if (!text) return;
  const count = Number(ahead);
  const waiting = Number.isInteger(count) && count > 0;
  text.textContent = waiting ? `Waiting for the model, ${count} ahead` : "Writing…";
  el.classList.toggle("is-waiting", waiting);
}

/**
 * Screen readers: the streaming body is aria-live but aria-busy (no chatter per
 * delta); the finished reply is read once from a live region that stays in place.
 */
export function announceReply(announcer, entry) {
  if (!announcer) return;
  const body = entry.el.querySelector('[data-testid="message-body"]');
  const text = (body ? body.textContent : "").trim().slice(0, 4000);
  let message;
  if (entry.msg.status === "failed") message = `The reply failed. ${entry.error ? entry.error.text : ""} ${text}`;
  else if (entry.msg.status === "stopped") message = `Reply stopped: ${text}`;
  else if (entry.msg.status === "cut") message = `Reply cut off at the length limit (you can continue it): ${text}`;
  else message = `Reply: ${text}`;
  announcer.textContent = "";
  window.setTimeout(() => {
    announcer.textContent = message;
  }, 50);
}

/** Whether a stored message is the one a tab sent (whitespace at the ends aside). */
export function sameText(a, b) {
  return String(a || "").trim() === String(b || "").trim();
}
