// The chat page's state: which conversation is open, what the server allows, the
// connection, and the requests in flight. This module is the only one that writes it:
// the other modules read its getters and change it through the named transitions
// below, so that every change of, say, the open conversation is found in one place.
// (The components keep their own view state: the pane its messages, the sidebar its
// list, the composer its text.)

const MAX_TRACKED_REQUESTS = 200;

export class ChatState {
  #conversationId;
  #conversation = null; // metadata of the open conversation
  #limits;
  #models = [];
  #selectedModel; // the model for the first message of a new chat
  #defaultModel; // the account's default model (hello's preferences)
  #usage = null; // today's allowance of hosted-model requests (hello), or null
  #connection = "connecting";
  #connectionReason = null;
  #awaitingState = null; // id of the conversation whose conversation.state is awaited
  #bufferedDeltas = []; // reply.delta frames that came while awaiting it
  #requests = new Map(); // ref -> {type, ...what is needed to handle its error}
  #refCounter = 0;
  #newChatRef = null; // ref of the message.send that creates a conversation
  #cooldownUntil = 0;
  #cooldownTimer = null;
  #shareUrl = null;
  #pendingDeletes = new Set();
  #savingSystemPrompt = null;
  #lastSearchRef = null;
  #reveal = null; // {conversation, message, switched}: a search result's message to show once it is in the pane

  constructor({ conversation = null, limits = {}, selectedModel = null } = {}) {
    this.#conversationId = conversation || null;
    this.#limits = limits || {};
    this.#selectedModel = selectedModel || null;
    this.#defaultModel = this.#selectedModel;
  }

  get conversationId() { return this.#conversationId; }
  get conversation() { return this.#conversation; }
  get limits() { return this.#limits; }
  get models() { return this.#models; }
  get selectedModel() { return this.#selectedModel; }
  get usage() { return this.#usage; }
  get connection() { return this.#connection; }
  get connectionReason() { return this.#connectionReason; }
  get newChatRef() { return this.#newChatRef; }
  get shareUrl() { return this.#shareUrl; }
  get savingSystemPrompt() { return this.#savingSystemPrompt; }
  get lastSearchRef() { return this.#lastSearchRef; }
  get reveal() { return this.#reveal; }

  // --- The open conversation -------------------------------------------------------

  /** Another conversation is shown; meta is what is known of it so far. */
  openConversation(id, meta) {
    this.#conversationId = id;
    this.#conversation = { ...meta };
    this.#shareUrl = null;
    this.#newChatRef = null;
  }

  /** The first message of a new chat created this conversation: it becomes the open one. */
  adoptConversation(meta) {
    this.#conversationId = meta.id;
    this.#conversation = { ...meta };
    this.#newChatRef = null;
  }

  /** A new chat: no conversation is open until its first message creates one. */
  closeConversation() {
    this.#conversationId = null;
    this.#conversation = null;
    this.#shareUrl = null;
    this.#newChatRef = null;
    this.stopAwaitingState();
  }

  /** The whole metadata of the open conversation (conversation.state). */
  setConversation(meta) {
    this.#conversation = meta;
    if (!meta.shared) this.#shareUrl = null;
  }

  /** Some fields of the open conversation changed (conversation.updated). */
  updateConversation(meta) {
    this.#conversation = { ...(this.#conversation || {}), ...meta };
    if (meta.shared === false) this.#shareUrl = null;
  }

  /** conversation.shared: the link (shown once), or null when sharing stopped. */
  setShareUrl(url) {
    this.#shareUrl = url || null;
    if (this.#conversation) this.#conversation = { ...this.#conversation, shared: Boolean(url) };
  }

  setNewChatRef(ref) {
    this.#newChatRef = ref;
  }

  // --- Waiting for a conversation.state ------------------------------------------------

  isAwaitingState(conversationId) {
    return this.#awaitingState !== null && this.#awaitingState === conversationId;
  }

  /** Deltas that arrive until the state of `id` has come are kept for after it. */
  awaitState(id) {
    this.#awaitingState = id;
    this.#bufferedDeltas = [];
  }

  stopAwaitingState() {
    this.#awaitingState = null;
    this.#bufferedDeltas = [];
  }

  bufferDelta(frame) {
    this.#bufferedDeltas.push(frame);
  }

  /** The state of `id` has come: ends the wait and returns the deltas kept meanwhile (none if it was not awaited). */
  receivedState(id) {
    if (this.#awaitingState !== id) return [];
    const buffered = this.#bufferedDeltas;
    this.stopAwaitingState();
    return buffered;
  }

  // --- What the server offers --------------------------------------------------------

  mergeLimits(limits) {
    this.#limits = { ...this.#limits, ...(limits || {}) };
  }

  setModels(models) {
    this.#models = Array.isArray(models) ? models : [];
  }

  selectModelForNewChat(id) {
    this.#selectedModel = id;
  }

  /** hello's preferences: a new chat starts on the account's default model, unless this tab picked another for it. */
  setDefaultModel(id) {
    if (!id) return;
    if (this.#selectedModel === this.#defaultModel) this.#selectedModel = id;
    this.#defaultModel = id;
  }

  /** hello's usage: what is left of today's hosted-model allowance. */
  setUsage(usage) {
    this.#usage = usage && typeof usage === "object" ? usage : null;
  }

  // --- Connection and requests ---------------------------------------------------------

  setConnection(status, reason) {
    this.#connection = status;
    this.#connectionReason = reason || null;
  }

  /** A fresh ref for a request, remembered with what its error handler needs (the oldest are forgotten). */
  trackRequest(type, info = {}) {
    this.#refCounter += 1;
    const ref = `${type}-${Date.now().toString(36)}-${this.#refCounter.toString(36)}`;
    this.#requests.set(ref, { type, ...info });
    if (this.#requests.size > MAX_TRACKED_REQUESTS) this.#requests.delete(this.#requests.keys().next().value);
    return ref;
  }

  /** The request a frame answers (and forgets it), or null. */
  takeRequest(ref) {
    if (!ref) return null;
    const request = this.#requests.get(ref) || null;
    this.#requests.delete(ref);
    return request;
  }

  // --- Sending too fast ----------------------------------------------------------------

  /** Whole seconds left before messages may be sent again. */
  cooldownSeconds() {
    return Math.max(0, Math.ceil((this.#cooldownUntil - Date.now()) / 1000));
  }

  /** rate_limited: no sending for `seconds`; onTick runs every second until then, and once at the start. */
  startCooldown(seconds, onTick) {
    this.#cooldownUntil = Math.max(this.#cooldownUntil, Date.now() + seconds * 1000);
    clearInterval(this.#cooldownTimer);
    this.#cooldownTimer = setInterval(() => {
      if (this.cooldownSeconds() === 0) {
        clearInterval(this.#cooldownTimer);
        this.#cooldownTimer = null;
      }
      onTick();
    }, 1000);
    onTick();
  }

  // --- Sidebar and settings requests in flight ----------------------------------------------

  /** This tab asked to delete `id` (its conversation.deleted is then no surprise). */
  markDeleting(id) {
    this.#pendingDeletes.add(id);
  }

  /** The deletion of `id` is over; true if this tab had asked for it. */
  settleDelete(id) {
    return this.#pendingDeletes.delete(id);
  }

  /** The system prompt being saved (null: none): its conversation.updated says "Saved." */
  setSavingSystemPrompt(value) {
    this.#savingSystemPrompt = value;
  }

  // --- A search result's message -------------------------------------------------------

  /** Show `message` of `conversation` once the pane has it (reveal.js). */
  wantReveal(conversation, message) {
    this.#reveal = { conversation, message, switched: false };
  }

  /** The message is not on the active branch: a branch.switch was asked for it (once). */
  markRevealSwitched() {
    if (this.#reveal) this.#reveal = { ...this.#reveal, switched: true };
  }

  clearReveal() {
    this.#reveal = null;
  }

  /** Only the answer to the latest search is shown. */
  setLastSearchRef(ref) {
    this.#lastSearchRef = ref;
  }
}
