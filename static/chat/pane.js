// The message pane: the active branch of the open conversation and the reply being
// streamed into it. Its scrolling is scroll.js's; its inline editor is editor.js's.
//
// The pane keeps one entry per shown message, in branch order:
//   { msg, el, pending, stream, error }
//   msg      the protocol's message object (for a pending message: a local stand-in)
//   pending  null, or { ref, connectionId } for a user message sent but not yet stored
//   stream   null, or { expectedSeq, content, done, tail, body } while a reply is written
//   error    null, or { text, detail } for a failed reply
// It does not talk to the socket: protocol actions go to onAction(action, detail), and
// the streaming methods return "ok", "duplicate", "gap" or "unknown" so that
// conversation.js can decide to resynchronise.

import { buildFooter, buildMessage, codeTextFor, copyText, flashButton, h, openInNewTab } from "./render.js";
import { announceReply, appendDelta, openStream, sameText, showWaiting } from "./stream.js";
import { describeReplyFailure as failureOf } from "./errors.js";
import { ScrollFollower } from "./scroll.js";
import { InlineEditor } from "./editor.js";
import { rememberFocus, restoreFocus } from "./focus.js";
import { messageActionsRoving } from "./roving.js";

export class MessagePane {
  constructor({ list, scroller, jumpButton, emptyState, announcer, onAction }) {
    this.list = list;
    this.announcer = announcer;
    this.emptyState = emptyState;
    this.onAction = onAction;
    this.entries = [];
    this.online = false;
    this.loading = false;
    this.scroll = new ScrollFollower({ scroller, jumpButton });
    this.roving = messageActionsRoving(list); // one Tab stop for all the messages' buttons
    this.list.addEventListener("click", (event) => this.onClick(event));
    this.editor = new InlineEditor({ list, onSubmit: (id, content) => this.onAction("edit-submit", { id, content }) });
  }

  // --- Reading the state ---------------------------------------------------------

  get generating() {
    return this.entries.find((entry) => entry.stream) || null;
  }

  get busy() {
    return Boolean(this.generating);
  }

  hasPending() {
    return this.entries.some((entry) => entry.pending);
  }

  /** Id of the last stored message of the branch (the parent of the next message). */
  lastMessageId() {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      if (!this.entries[i].pending) return this.entries[i].msg.id;
    }
    return null;
  }

  find(id) {
    return this.entries.find((entry) => entry.msg.id === id) || null;
  }

  indexOf(id) {
    return this.entries.findIndex((entry) => entry.msg.id === id);
  }

  // --- Whole-pane changes ----------------------------------------------------------

  /** Reads the messages the server rendered into the page, then renders them again with their controls. */
  hydrateFromDom() {
    const entries = [];
    for (const article of this.list.querySelectorAll('[data-testid="message"]')) {
      const body = article.querySelector('[data-testid="message-body"]');
      const role = article.dataset.role === "user" ? "user" : "assistant";
      entries.push({
        msg: {
          id: article.dataset.id,
          parent: article.dataset.parent || null,
          role,
          content: role === "user" && body ? body.textContent : "",
          html: role === "assistant" && body ? body.innerHTML : "",
          model: article.dataset.model || null,
          status: article.dataset.status || null,
          siblings: (article.dataset.siblings || "").split(" ").filter(Boolean),
        },
        el: null,
        pending: null,
        stream: null,
        error: article.dataset.status === "failed" ? failureOf(null) : null,
      });
    }
    this.entries = entries;
    this.renderAll();
    this.scroll.scrollToBottom();
  }

  clear() {
    this.entries = [];
    this.loading = false;
    this.renderAll();
  }

  showLoading() {
    this.entries = [];
    this.loading = true;
    this.renderAll();
  }

  /**
   * Applies `conversation.state`: the active branch and the reply in progress.
   * Pending messages already stored (found in `messages`) are dropped; those sent on
   * an earlier connection and not found were lost and are returned, so that their text
   * can be given back to the user; those sent on this connection stay at the end.
   */
  setState(messages, generating, connectionId) {
    const lost = [];
    const keep = [];
    for (const entry of this.entries) {
      if (!entry.pending) continue;
      const stored = messages.some(
        (m) => m.role === "user" && sameText(m.content, entry.msg.content) && (m.parent || null) === (entry.msg.parent || null),
      );
      if (stored) continue;
      if (entry.pending.connectionId !== connectionId) lost.push(entry.msg.content);
      else keep.push(entry);
    }

    const entries = [];
    for (const msg of messages) {
      if (generating && msg.id === generating.message) continue; // shown as the reply in progress
      entries.push({ msg, el: null, pending: null, stream: null, error: msg.status === "failed" ? failureOf(msg.error) : null });
    }
    if (generating) {
      const stored = messages.find((m) => m.id === generating.message);
      const parent = (stored && stored.parent) || (entries.length ? entries[entries.length - 1].msg.id : null);
      entries.push(this.newStreamEntry({
        id: generating.message,
        parent,
        model: generating.model || (stored && stored.model) || null,
        siblings: (stored && stored.siblings) || [],
        seq: Number(generating.seq) || 0,
        html: generating.html,
        tail: generating.tail,
        content: generating.content || "",
      }));
      showWaiting(entries[entries.length - 1].el, generating.waiting);
    }
    for (const entry of keep) {
      entry.el = null;
      entries.push(entry);
    }
    this.entries = entries;
    this.loading = false;
    this.renderAll();
    const anchor = this.anchor;
    this.anchor = null;
    if (anchor) anchor.restore(this.find(anchor.id) && this.find(anchor.id).el);
    return { lost };
  }

  // --- Optimistic user messages ---------------------------------------------------

  addPending({ ref, content, parent, connectionId }) {
    const entry = {
      msg: { id: `pending-${ref}`, parent, role: "user", content, siblings: [] },
      el: null,
      pending: { ref, connectionId },
      stream: null,
      error: null,
    };
    this.entries.push(entry);
    this.loading = false;
    this.appendEntryElement(entry);
    this.refreshFooters();
    this.scroll.scrollToBottom();
  }

  /** Removes a pending message (its send failed); returns its text, or null. */
  removePending(ref) {
    const index = this.entries.findIndex((entry) => entry.pending && entry.pending.ref === ref);
    if (index < 0) return null;
    const [entry] = this.entries.splice(index, 1);
    entry.el.remove();
    this.afterStructureChange();
    return entry.msg.content;
  }

  /** Drops every pending message (the connection they went out on is gone); returns their texts. */
  takeAllPending() {
    const texts = [];
    for (const entry of this.entries.filter((e) => e.pending)) texts.push(this.removePending(entry.pending.ref));
    return texts;
  }

  /**
   * The optimistic side of an edit: the edited message and everything after it make
   * way for the new text, shown as pending until `message.created` arrives.
   */
  replaceWithPendingEdit(messageId, { ref, content, connectionId }) {
    const index = this.indexOf(messageId);
    if (index < 0) return false;
    const parent = this.entries[index].msg.parent || null;
    this.truncateFrom(index);
    this.addPending({ ref, content, parent, connectionId });
    return true;
  }

  /** `message.created`: reconciles a pending message, or adds a message sent elsewhere. */
  receiveUserMessage(msg, ref) {
    const existing = this.find(msg.id);
    if (existing) {
      existing.msg = msg;
      this.rerenderEntry(existing);
      return "ok";
    }
    const pending = this.matchPending(msg, ref);
    if (pending) {
      pending.msg = msg;
      pending.pending = null;
      this.rerenderEntry(pending);
      this.refreshFooters();
      return "ok";
    }
    if (!this.placeAfterParent(msg.parent)) return "unknown";
    const entry = { msg, el: null, pending: null, stream: null, error: null };
    this.entries.push(entry);
    this.appendEntryElement(entry);
    this.afterStructureChange();
    return "ok";
  }

  matchPending(msg, ref) {
    const pendings = this.entries.filter((entry) => entry.pending);
    if (!pendings.length || msg.role !== "user") return null;
    if (ref) {
      const byRef = pendings.find((entry) => entry.pending.ref === ref);
      if (byRef) return byRef;
    }
    const byText = pendings.find(
      (entry) => sameText(entry.msg.content, msg.content) && (entry.msg.parent || null) === (msg.parent || null),
    );
    if (byText) return byText;
    return !ref && pendings.length === 1 ? pendings[0] : null;
  }

  // --- Streaming ---------------------------------------------------------------------

  /** `reply.waiting`: how many generations the local model runs before this reply. */
  setWaiting(id, ahead) {
    const entry = this.find(id);
    if (entry && entry.stream) showWaiting(entry.el, ahead);
    return entry && entry.stream ? "ok" : "unknown";
  }

  /**
   * `reply.started`: a bubble in the generating state under `parent`. A continued reply
   * (`continues`) is the stored one written on: it shows `content`/`html` and streams again.
   */
  startReply({ id, parent, model, continues = false, content = "", html = null }) {
    // Already shown (streaming, or already finished when a late frame is replayed): nothing to do.
    const shown = this.find(id);
    if (shown && (shown.stream || !continues)) return "ok";
    const parentIndex = parent ? this.indexOf(parent) : -1;
    if (parent && parentIndex < 0) return "unknown";
    // A regenerated reply replaces the old one on screen; the old one becomes a sibling.
    const replaced = this.entries[parentIndex + 1];
    let siblings = [id];
    if (replaced && !replaced.pending && replaced.msg.role === "assistant" && (replaced.msg.parent || null) === (parent || null)) {
      const old = replaced.msg.siblings && replaced.msg.siblings.length ? replaced.msg.siblings : [replaced.msg.id];
      siblings = old.includes(id) ? old : [...old, id];
    }
    // Pending messages of this socket stay (they are waiting for their own answer).
    const pendings = this.entries.slice(parentIndex + 1).filter((entry) => entry.pending);
    this.truncateFrom(parentIndex + 1);
    const entry = this.newStreamEntry({ id, parent: parent || null, model: model || null, siblings, seq: 0, html, tail: null, content });
    this.entries.push(entry);
    this.appendEntryElement(entry);
    for (const p of pendings) {
      this.entries.push(p);
      this.appendEntryElement(p);
    }
    this.afterStructureChange();
    this.scroll.followIfStuck();
    return "ok";
  }

  /**
   * `reply.delta`: "ok", "duplicate" or "gap" (stream.js), or "unknown" when no such
   * reply is being written here.
   */
  applyDelta(frame) {
    const entry = this.find(frame.message);
    if (!entry || !entry.stream) return "unknown";
    const result = appendDelta(entry.stream, entry.el, frame);
    if (result === "ok") this.scroll.followIfStuck();
    return result;
  }

  /** `reply.completed` / `reply.failed`: the stored reply replaces the streamed one. */
  finishReply(msg, { stopped = false, error = null } = {}) {
    const finished = { ...msg };
    if (stopped && !finished.status) finished.status = "stopped";
    if (error && !finished.status) finished.status = "failed";
    let entry = this.find(msg.id);
    if (!entry) {
      if (!this.placeAfterParent(msg.parent)) return "unknown";
      entry = { msg: finished, el: null, pending: null, stream: null, error: null };
      this.entries.push(entry);
    }
    const wasStreaming = Boolean(entry.stream);
    entry.msg = finished;
    entry.stream = null;
    entry.error = finished.status === "failed" ? failureOf(error || msg.error) : null;
    if (entry.el) this.rerenderEntry(entry);
    else this.appendEntryElement(entry);
    this.afterStructureChange();
    this.scroll.followIfStuck();
    if (wasStreaming) announceReply(this.announcer, entry);
    return "ok";
  }

  /** Stop was pressed, or its request failed (the composer shows that the stop is on its way). */
  setStopping(stopping) {
    const entry = this.generating;
    if (entry) entry.stopping = stopping;
  }

  /** Whether a stop was asked for the reply being written. */
  get stopping() {
    const entry = this.generating;
    return Boolean(entry && entry.stopping);
  }

  /** The entry of a reply being written (see stream.js for html, tail and content). */
  newStreamEntry({ id, parent, model, siblings, seq, html, tail, content }) {
    const msg = { id, parent, role: "assistant", content, html: "", model, status: null, siblings };
    const entry = { msg, el: null, pending: null, stream: { expectedSeq: seq, content }, error: null };
    entry.el = this.buildElement(entry, true);
    entry.stream = openStream(entry.el, { seq, html, tail, content });
    return entry;
  }

  // --- Online / busy -----------------------------------------------------------------

  setOnline(online) {
    if (this.online === online) return;
    this.online = online;
    this.refreshFooters();
  }

  get locked() {
    return !this.online || this.busy;
  }

  // --- Rendering ---------------------------------------------------------------------

  buildElement(entry, isLast) {
    return buildMessage(entry.msg, {
      isLast,
      locked: this.locked,
      pending: Boolean(entry.pending),
      generating: Boolean(entry.stream),
      error: entry.error,
    });
  }

  renderAll() {
    const focus = rememberFocus(this.list);
    const fragment = document.createDocumentFragment();
    this.entries.forEach((entry, index) => {
      if (!entry.el || !entry.stream) entry.el = this.buildElement(entry, index === this.entries.length - 1);
      fragment.append(entry.el);
    });
    if (this.loading) {
      fragment.append(
        h("div", { className: "pane-loading", dataset: { testid: "pane-loading" }, attrs: { role: "status" } },
          h("span", { className: "spinner", attrs: { "aria-hidden": "true" } }),
          h("span", { text: " Loading conversation…" })),
      );
    }
    this.list.replaceChildren(fragment);
    this.afterStructureChange(false);
    restoreFocus(this.list, focus);
    this.scroll.scrollToBottom();
  }

  appendEntryElement(entry) {
    const loading = this.list.querySelector(".pane-loading");
    if (loading) loading.remove();
    this.loading = false;
    if (!entry.el) entry.el = this.buildElement(entry, true);
    this.list.append(entry.el);
    this.emptyState.hidden = true;
  }

  rerenderEntry(entry) {
    const index = this.entries.indexOf(entry);
    const fresh = this.buildElement(entry, index === this.entries.length - 1);
    if (entry.el && entry.el.parentNode) entry.el.replaceWith(fresh);
    else this.list.append(fresh);
    entry.el = fresh;
  }

  /** Rebuilds the footers (versions, actions) of all messages: which one is last, and what is locked. */
  refreshFooters() {
    const focus = rememberFocus(this.list);
    const locked = this.locked;
    this.entries.forEach((entry, index) => {
      if (!entry.el) return;
      const footer = buildFooter(entry.msg, {
        isLast: index === this.entries.length - 1,
        locked,
        pending: Boolean(entry.pending),
        generating: Boolean(entry.stream),
      });
      const old = entry.el.querySelector(":scope > .message-footer");
      if (old) old.replaceWith(footer);
      else entry.el.append(footer);
    });
    restoreFocus(this.list, focus);
    this.roving.sync();
  }

  afterStructureChange(refresh = true) {
    if (refresh) this.refreshFooters();
    else this.roving.sync();
    this.emptyState.hidden = this.entries.length > 0 || this.loading;
    this.list.dataset.busy = this.busy ? "true" : "false";
    this.onAction("changed", {});
  }

  /** Removes the entries from `index` on (DOM included). */
  truncateFrom(index) {
    for (const entry of this.entries.splice(Math.max(0, index))) {
      if (entry.el) entry.el.remove();
    }
  }

  /** Makes `parent` (null: the root) the last shown message; false if it is not shown. */
  placeAfterParent(parent) {
    if (!parent) {
      this.truncateFrom(0);
      return true;
    }
    const index = this.indexOf(parent);
    if (index < 0) return false;
    this.truncateFrom(index + 1);
    return true;
  }

  beginEdit(id) {
    const entry = this.find(id);
    if (!entry || entry.msg.role !== "user" || entry.pending || !entry.el) return;
    this.editor.open(id, entry.el, entry.msg.content);
  }

  // --- Clicks ------------------------------------------------------------------------

  onClick(event) {
    const link = event.target.closest(".markdown-body a[href]");
    if (link) {
      openInNewTab(link);
      return;
    }
    const button = event.target.closest("[data-action]");
    if (!button || button.disabled) return;
    const article = button.closest('[data-testid="message"]');
    const id = article ? article.dataset.id : null;
    switch (button.dataset.action) {
      case "copy-code":
        copyText(codeTextFor(button)).then((ok) => flashButton(button, ok));
        break;
      case "copy-message": {
        const entry = this.find(id);
        const body = article.querySelector('[data-testid="message-body"]');
        const text = (entry && entry.msg.content) || (body ? body.innerText : "");
        copyText(text).then((ok) => flashButton(button, ok));
        break;
      }
      case "edit":
        this.beginEdit(id);
        break;
      case "edit-cancel":
        this.editor.cancel();
        break;
      case "branch": // the other version comes where this one is on screen (see setState)
        if (!button.dataset.target) break;
        this.anchor = { id: button.dataset.target, restore: this.scroll.anchor(article) };
        this.onAction("branch", { id, target: button.dataset.target });
        break;
      case "regenerate":
      case "continue":
        this.onAction(button.dataset.action, { id });
        break;
    }
  }
}

