// The open conversation: opening one (or a new chat) without reloading the page, its
// messages and the reply being streamed (in the pane), sending from the composer and
// from the pane's buttons, and whether a message can be sent now.
//
// The pane is kept in step with the server: when it falls out of step (a gap in the
// deltas, an unknown parent...) the whole state is asked again (resync); deltas that
// arrive while it is awaited are kept and replayed after it.
//
// Frames handled: conversation.state, message.created, reply.started, reply.waiting,
//                 reply.delta, reply.completed, reply.failed.
// Requests sent:  conversation.open, message.send, message.edit, message.regenerate,
//                 message.continue, branch.switch, generation.stop.

import { NEW_CHAT_URL, conversationIdFromPath, conversationUrl } from "./boot.js";
import { ALERTED } from "./connection.js";
import { describeError } from "./errors.js";
import { MessageReveal } from "./reveal.js";

export class OpenConversation {
  constructor({ state, connection, alerts, pane, composer, sidebar, toolbar, newChatButton }) {
    Object.assign(this, { state, connection, alerts, pane, composer, sidebar, toolbar });
    this.reveal = new MessageReveal({ state, connection, pane }); // a search result's message

    connection.on("conversation.state", (frame) => this.onConversationState(frame));
    connection.on("message.created", (frame) => this.onMessageCreated(frame));
    connection.on("reply.started", (frame) => this.onReplyStarted(frame));
    connection.on("reply.waiting", (frame) => this.onReplyWaiting(frame));
    connection.on("reply.delta", (frame) => this.onReplyDelta(frame));
    connection.on("reply.completed", (frame) => this.onReplyFinished(frame, null));
    connection.on("reply.failed", (frame) => this.onReplyFinished(frame, frame.error || { code: "model_failed" }));
    connection.onHandlerFailure = (frame) => {
      if (frame.type === "conversation.state") state.stopAwaitingState(); // do not loop on a state we cannot show
      else this.resync();
    };

    connection.onRequestError("message.send", (frame, request) => this.onSendFailed(frame, request));
    for (const type of ["message.edit", "branch.switch", "message.regenerate", "message.continue"]) connection.onRequestError(type, () => this.resync());
    connection.onRequestError("conversation.open", (frame, request) => this.onOpenFailed(frame, request));
    connection.onRequestError("generation.stop", () => {
      this.pane.setStopping(false);
      this.refreshComposer();
    });
    connection.onError((frame) => {
      if (frame.code === "rate_limited" && frame.retry_after) this.startCooldown(frame.retry_after);
      this.refreshComposer();
    });
    connection.onStatusChange(() => this.refreshComposer());

    window.addEventListener("popstate", () => this.onPopState());
    newChatButton.addEventListener("click", (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      this.startNew();
    });
  }

  /** First paint: the conversation the server rendered into the page becomes the open one. */
  hydrate() {
    const { state } = this;
    this.pane.hydrateFromDom();
    const id = state.conversationId;
    if (!id) return;
    state.openConversation(id, { ...(this.sidebar.get(id) || {}), ...this.toolbar.readRenderedMeta(), id });
    const url = conversationUrl(id);
    if (window.location.pathname !== url) window.history.replaceState({ conversation: id }, "", url);
  }

  /** A new connection (hello): ask again for the open conversation, or give back what was lost. */
  reconnected() {
    if (this.state.conversationId) {
      this.requestState(this.state.conversationId);
    } else if (this.pane.hasPending()) {
      // A first message sent on a connection that is gone: nothing will answer it now.
      this.state.setNewChatRef(null);
      this.giveBackLostMessages(this.pane.takeAllPending());
    }
    this.refreshComposer();
  }

  // --- Opening, new chat, history ---------------------------------------------------------

  /** Shows a conversation without reloading the page (at `message`, a search result's); false when that is not possible (offline). */
  open(id, { push = true, message = null } = {}) {
    const { state } = this;
    if (!this.connection.connected) return false; // let the link load the page
    this.reveal.want(id, message);
    this.sidebar.closeOnNarrowScreens();
    if (id === state.conversationId && !push) return true;
    if (id === state.conversationId && !state.isAwaitingState(id)) {
      if (message) this.reveal.shown(id);
      else this.composer.focus();
      return true;
    }
    this.composer.switchDraft(id);
    state.openConversation(id, this.sidebar.get(id) || { id });
    if (push) window.history.pushState({ conversation: id }, "", conversationUrl(id));
    this.sidebar.setActive(id);
    this.pane.showLoading();
    this.requestState(id);
    this.toolbar.render();
    this.refreshComposer();
    return true;
  }

  startNew({ push = true, replace = false } = {}) {
    this.composer.switchDraft(null);
    this.state.closeConversation();
    this.pane.clear();
    this.sidebar.setActive(null);
    if (replace) window.history.replaceState({ conversation: null }, "", NEW_CHAT_URL);
    else if (push && window.location.pathname !== NEW_CHAT_URL) window.history.pushState({ conversation: null }, "", NEW_CHAT_URL);
    this.toolbar.render();
    this.refreshComposer();
    this.sidebar.closeOnNarrowScreens();
    this.composer.focus();
  }

  /** The first message of a new chat created this conversation: it becomes the open one. */
  adopt(meta) {
    this.state.adoptConversation({ ...(this.sidebar.get(meta.id) || {}), ...meta });
    this.composer.switchDraft(meta.id, { carry: true });
    window.history.replaceState({ conversation: meta.id }, "", conversationUrl(meta.id));
    this.sidebar.setActive(meta.id);
    this.toolbar.render();
  }

  /** conversation.created: the answer to this tab's first message of a new chat is adopted. */
  created(meta, ref) {
    const { state } = this;
    if (!state.conversationId && state.newChatRef && ref === state.newChatRef) this.adopt(meta);
  }

  /** conversation.updated of any conversation: the open one's header follows. */
  updated(meta) {
    if (meta.id !== this.state.conversationId) return;
    this.state.updateConversation(meta);
    this.toolbar.confirmSaved(meta);
    this.toolbar.render();
  }

  /** conversation.deleted: the open one gives way to a new chat (and says why if it was not this tab). */
  deleted(id, deletedHere) {
    if (id !== this.state.conversationId) return;
    this.startNew({ replace: true });
    if (!deletedHere) this.alerts.show({ code: "deleted", text: "This conversation was deleted in another tab or window.", variant: "warning" });
  }

  onPopState() {
    const id = conversationIdFromPath(window.location.pathname);
    if (id) {
      if (!this.open(id, { push: false })) window.location.reload();
    } else if (window.location.pathname === NEW_CHAT_URL) {
      this.startNew({ push: false });
    } else {
      window.location.reload();
    }
  }

  // --- Keeping the pane in step with the server ---------------------------------------------

  /** Asks for the whole state of a conversation; deltas that arrive meanwhile are kept for after it. */
  requestState(id) {
    this.state.awaitState(id);
    if (this.connection.sendQuietly("conversation.open", { conversation: id }, { conversation: id }) === null) {
      this.state.stopAwaitingState(); // the next hello asks again
    }
  }

  /** The pane is out of step with the server: start again from the state. */
  resync() {
    const id = this.state.conversationId;
    if (!id || this.state.isAwaitingState(id)) return;
    this.requestState(id);
  }

  /** Whether frames about this conversation are for the pane now (it is open and not being reloaded). */
  shows(conversationId) {
    return conversationId === this.state.conversationId && !this.state.isAwaitingState(conversationId);
  }

  onConversationState(frame) {
    const { state } = this;
    const meta = frame.conversation || {};
    if (meta.id) this.sidebar.upsert(meta, { animateTitle: false });
    if (!meta.id || meta.id !== state.conversationId) return;
    state.setConversation(meta);
    const generating = frame.generating || null;
    const { lost } = this.pane.setState(Array.isArray(frame.messages) ? frame.messages : [], generating, this.connection.connectionId);
    this.giveBackLostMessages(lost);
    this.sidebar.setGenerating(meta.id, Boolean(generating));
    for (const delta of state.receivedState(meta.id)) this.applyDelta(delta, { replaying: true });
    this.toolbar.render();
    this.refreshComposer();
    this.reveal.shown(meta.id);
  }

  onMessageCreated(frame) {
    const { state } = this;
    const msg = frame.message;
    if (!msg || typeof msg !== "object") return;
    const conversationId = frame.conversation;
    if (!state.conversationId && state.newChatRef && (frame.ref === state.newChatRef || !frame.ref)) {
      // Our first message of a new chat; conversation.created may come after it.
      this.adopt(this.sidebar.get(conversationId) || { id: conversationId });
    }
    this.sidebar.touch(conversationId, msg.created_at); // newest first: no conversation.updated comes for a new message
    if (!this.shows(conversationId)) return;
    if (this.pane.receiveUserMessage(msg, frame.ref) === "unknown") this.resync();
    this.refreshComposer();
  }

  onReplyStarted(frame) {
    this.sidebar.setGenerating(frame.conversation, true);
    if (!this.shows(frame.conversation)) return;
    const continued = frame.continues === true && typeof frame.content === "string";
    const result = this.pane.startReply({
      id: frame.message, parent: frame.parent || null, model: frame.model || null,
      continues: continued, content: continued ? frame.content : "", html: continued ? frame.html : null,
    });
    if (result === "unknown") this.resync();
    this.refreshComposer();
  }

  onReplyWaiting(frame) {
    if (!this.shows(frame.conversation)) return;
    if (this.pane.setWaiting(frame.message, frame.ahead) === "unknown") this.resync();
  }

  onReplyDelta(frame) {
    if (frame.conversation !== this.state.conversationId) return;
    if (this.state.isAwaitingState(frame.conversation)) {
      this.state.bufferDelta(frame);
      return;
    }
    this.applyDelta(frame, { replaying: false });
  }

  applyDelta(frame, { replaying }) {
    const result = this.pane.applyDelta(frame);
    if (result === "gap" || (result === "unknown" && !replaying)) this.resync();
  }

  onReplyFinished(frame, error) {
    this.sidebar.setGenerating(frame.conversation, false);
    if (!this.shows(frame.conversation)) return;
    const msg = frame.message;
    if (!msg || typeof msg !== "object") {
      this.resync();
      return;
    }
    if (this.pane.finishReply(msg, { stopped: Boolean(frame.stopped), error }) === "unknown") this.resync();
    this.refreshComposer();
  }

  // --- Failed requests -----------------------------------------------------------------------

  onSendFailed(frame, request) {
    const text = this.pane.removePending(frame.ref);
    this.composer.restore(text !== null ? text : request.content);
    if (this.state.newChatRef === frame.ref) this.state.setNewChatRef(null);
  }

  /** The open conversation could not be loaded; one that does not exist gives way to a new chat. */
  onOpenFailed(frame, request) {
    if (request.conversation !== this.state.conversationId) return null;
    this.state.stopAwaitingState();
    if (frame.code === "not_found") {
      this.startNew({ replace: true });
      this.alerts.show({ code: frame.code, text: "That conversation doesn't exist (it may have been deleted). Here is a new chat instead." });
      return ALERTED;
    }
    this.pane.clear();
    return null;
  }

  // --- Sending -------------------------------------------------------------------------------

  sendMessage(text) {
    const { state } = this;
    const conversation = state.conversationId;
    const fields = { conversation, content: text };
    const model = this.toolbar.model;
    if (model) fields.model = model;
    const ref = this.connection.send("message.send", fields, { content: text, conversation });
    if (!ref) return;
    if (!conversation) state.setNewChatRef(ref);
    this.pane.addPending({ ref, content: text, parent: this.pane.lastMessageId(), connectionId: this.connection.connectionId });
    this.composer.clear();
    this.refreshComposer();
  }

  /** The pane's buttons (regenerate, switch branch, edit) and the composer's Stop. */
  onPaneAction(action, detail) {
    const conversation = this.state.conversationId;
    const { connection, pane } = this;
    switch (action) {
      case "changed":
        this.refreshComposer();
        break;
      case "stop":
        if (conversation && pane.busy && !pane.stopping && connection.send("generation.stop", { conversation })) {
          pane.setStopping(true);
          this.refreshComposer();
        }
        break;
      case "regenerate":
        if (conversation) connection.send("message.regenerate", { conversation });
        break;
      case "continue":
        if (conversation) connection.send("message.continue", { conversation, message: detail.id });
        break;
      case "branch":
        if (conversation) connection.send("branch.switch", { conversation, message: detail.target });
        break;
      case "edit-submit":
        if (conversation) this.sendEdit(conversation, detail);
        break;
      default:
        break;
    }
  }

  sendEdit(conversation, { id, content }) {
    const limits = this.state.limits;
    const limit = Number(limits.max_content_chars) || 0;
    if (limit && content.length > limit) {
      this.alerts.show(describeError({ code: "too_large" }, limits, "message.edit"));
      return;
    }
    const ref = this.connection.send("message.edit", { conversation, message: id, content }, { content });
    if (ref) this.pane.replaceWithPendingEdit(id, { ref, content, connectionId: this.connection.connectionId });
  }

  giveBackLostMessages(texts) {
    const lost = texts.filter(Boolean);
    if (!lost.length) return;
    this.composer.restore(lost.join("\n\n"));
    this.alerts.show({
      code: "not_sent",
      text: "The connection dropped before your message was stored. It is back in the message box: send it again.",
      variant: "warning",
    });
  }

  // --- Whether a message can be sent now ------------------------------------------------------

  startCooldown(retryAfter) {
    const seconds = Math.ceil(Number(retryAfter));
    if (!Number.isFinite(seconds) || seconds <= 0) return;
    this.state.startCooldown(seconds, () => this.refreshComposer());
  }

  connectionProblem() {
    switch (this.state.connection) {
      case "connected":
        return null;
      case "connecting":
        return "Connecting to the server…";
      case "offline":
        return this.state.connectionReason === "signed-out"
          ? "You're signed out. Reload the page to sign in again."
          : "You're offline. Messages can be sent again when the connection is back.";
      default:
        return "The connection was lost. Reconnecting…";
    }
  }

  /** Whether a message can be sent now, and if not, why (shown under the composer). */
  refreshComposer() {
    const { state, pane } = this;
    pane.setOnline(state.connection === "connected");
    const cooldown = state.cooldownSeconds();
    let reason = this.connectionProblem();
    if (!reason && cooldown > 0) reason = `You're sending messages too fast — try again in ${cooldown} s.`;
    if (!reason && pane.busy) reason = "A reply is being written. Stop it with the Stop button or Escape.";
    if (!reason && pane.hasPending()) reason = "Sending…";
    if (!reason && state.conversationId && state.isAwaitingState(state.conversationId) && pane.loading) reason = "Loading the conversation…";
    this.composer.setBlocked(reason);
    this.composer.setGenerating(pane.busy && state.connection === "connected", pane.stopping);
  }
}
