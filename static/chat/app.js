// The chat page: wires the socket (socket.js) to the sidebar (sidebar.js), the message
// pane (pane.js), the composer (composer.js) and the navbar controls, following the
// WebSocket protocol (shared PROTOCOL.md, docs/protocol.md).
//
// Frames sent:    conversation.open, message.send, message.edit, message.regenerate,
//                 branch.switch, generation.stop, conversation.configure,
//                 conversation.rename, conversation.delete, conversation.share,
//                 conversation.unshare, conversation.search, ping (socket.js)
// Frames handled: hello, conversation.state, conversation.created, conversation.updated,
//                 conversation.deleted, conversation.shared, search.results,
//                 message.created, reply.started, reply.delta, reply.completed,
//                 reply.failed, error, pong

import { ReconnectingSocket } from "./socket.js";
import { MessagePane } from "./pane.js";
import { Sidebar } from "./sidebar.js";
import { Composer } from "./composer.js";
import { describeError } from "./errors.js";
import { buildAlert, conversationTitle, copyText, flashButton, h } from "./render.js";

const $ = (id) => document.getElementById(id);

function readBoot() {
  const node = $("chat-boot");
  try {
    return (node && JSON.parse(node.textContent)) || {};
  } catch (error) {
    return {};
  }
}

const boot = readBoot();
const URL_TEMPLATE = boot.conversationUrlTemplate || "/c/__id__/";
const NEW_CHAT_URL = boot.newChatUrl || "/new/";
const APP_NAME = document.body.dataset.appName || "Chat";
const MAX_TRACKED_REQUESTS = 200;

const state = {
  conversationId: boot.conversation || null,
  conversation: null, // metadata of the open conversation
  limits: boot.limits || {},
  models: [],
  selectedModel: boot.selectedModel || null, // the model for the first message of a new chat
  connection: "connecting",
  connectionReason: null,
  awaitingState: null, // id of the conversation whose conversation.state is awaited
  bufferedDeltas: [],
  requests: new Map(), // ref -> {type, ...what is needed to handle its error}
  newChatRef: null, // ref of the message.send that creates a conversation
  cooldownUntil: 0,
  cooldownTimer: null,
  shareUrl: null,
  pendingDeletes: new Set(),
  savingSystemPrompt: null,
  lastSearchRef: null,
};

// --- URLs ---------------------------------------------------------------------

function conversationUrl(id) {
  return URL_TEMPLATE.replace("__id__", encodeURIComponent(id));
}

function conversationIdFromPath(pathname) {
  const [before, after] = URL_TEMPLATE.split("__id__");
  if (after === undefined || !pathname.startsWith(before) || !pathname.endsWith(after)) return null;
  const middle = pathname.slice(before.length, pathname.length - after.length);
  if (!middle || middle.includes("/")) return null;
  try {
    return decodeURIComponent(middle);
  } catch (error) {
    return null;
  }
}

function socketUrl() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}${boot.wsPath || "/ws/chat/"}`;
}

// --- Components -----------------------------------------------------------------

const socket = new ReconnectingSocket(socketUrl(), {
  onFrame: handleFrame,
  onStatus: onConnectionStatus,
});

const pane = new MessagePane({
  list: $("message-list"),
  scroller: $("message-scroller"),
  jumpButton: $("jump-bottom"),
  emptyState: $("empty-state"),
  announcer: $("reply-announcer"),
  onAction: onPaneAction,
});

const sidebar = new Sidebar({
  list: $("conversation-list"),
  emptyNote: $("conversation-empty"),
  filterNote: $("conversation-no-match"),
  searchForm: $("search-form"),
  searchInput: $("search"),
  results: $("search-results"),
  resultsList: $("search-results-list"),
  resultsLabel: $("search-results-label"),
  resultsClose: $("search-results-close"),
  urlFor: conversationUrl,
  onOpen: (id) => openConversation(id),
  onRename: renameConversation,
  onDelete: confirmDelete,
  onSearch: (query) => {
    state.lastSearchRef = sendRequest("conversation.search", { query });
  },
});

const composer = new Composer({
  form: $("composer-form"),
  textarea: $("composer"),
  sendButton: $("send"),
  hint: $("composer-hint"),
  counter: $("composer-counter"),
  onSubmit: sendMessage,
});

const modelPicker = $("model-picker");

// --- Sending requests -------------------------------------------------------------

let refCounter = 0;

function newRef(type, info) {
  refCounter += 1;
  const ref = `${type}-${Date.now().toString(36)}-${refCounter.toString(36)}`;
  state.requests.set(ref, { type, ...info });
  if (state.requests.size > MAX_TRACKED_REQUESTS) state.requests.delete(state.requests.keys().next().value);
  return ref;
}

/** Sends a request with a fresh ref; returns the ref, or null (and says so) when offline. */
function sendRequest(type, fields, info = {}) {
  const ref = newRef(type, info);
  if (socket.send({ type, ...fields, ref })) return ref;
  state.requests.delete(ref);
  showError({ code: "offline", text: "You're not connected, so that could not be done. Wait for the connection to come back." });
  return null;
}

// --- Incoming frames ------------------------------------------------------------

const handlers = {
  hello: onHello,
  "conversation.state": onConversationState,
  "conversation.created": onConversationCreated,
  "conversation.updated": onConversationUpdated,
  "conversation.deleted": onConversationDeleted,
  "conversation.shared": onConversationShared,
  "search.results": onSearchResults,
  "message.created": onMessageCreated,
  "reply.started": onReplyStarted,
  "reply.delta": onReplyDelta,
  "reply.completed": (f) => onReplyFinished(f, null),
  "reply.failed": (f) => onReplyFinished(f, f.error || { code: "model_failed" }),
  error: onErrorFrame,
  pong: () => {},
};

function handleFrame(frame) {
  const handler = handlers[frame.type];
  if (!handler) return; // a newer server may send more: ignore what we do not know
  try {
    handler(frame);
  } catch (error) {
    console.error("chat: failed to handle a frame", frame.type, error);
    if (frame.type === "conversation.state") state.awaitingState = null; // do not loop on a state we cannot show
    else resync();
  }
}

function onHello(frame) {
  state.limits = { ...state.limits, ...(frame.limits || {}) };
  applyLimits();
  state.models = Array.isArray(frame.models) ? frame.models : [];
  renderModelPicker();
  sidebar.setConversations(Array.isArray(frame.conversations) ? frame.conversations : []);
  sidebar.setActive(state.conversationId);

  if (state.conversationId) {
    requestState(state.conversationId);
  } else if (pane.hasPending()) {
    // A first message sent on a connection that is gone: nothing will answer it now.
    state.newChatRef = null;
    giveBackLostMessages(pane.takeAllPending());
  }
  refreshComposer();
}

/** Asks for the whole state of a conversation; deltas that arrive meanwhile are kept for after it. */
function requestState(id) {
  state.awaitingState = id;
  state.bufferedDeltas = [];
  const ref = newRef("conversation.open", { conversation: id });
  if (!socket.send({ type: "conversation.open", conversation: id, ref })) {
    state.requests.delete(ref);
    state.awaitingState = null; // the next hello asks again
  }
}

/** The pane is out of step with the server (a gap in the deltas, an unknown parent...): start again from the state. */
function resync() {
  if (!state.conversationId || state.awaitingState === state.conversationId) return;
  requestState(state.conversationId);
}

function isAwaitingState(conversationId) {
  return state.awaitingState !== null && state.awaitingState === conversationId;
}

function onConversationState(frame) {
  const meta = frame.conversation || {};
  if (meta.id) sidebar.upsert(meta, { animateTitle: false });
  if (!meta.id || meta.id !== state.conversationId) return;
  state.conversation = meta;
  if (!meta.shared) state.shareUrl = null;
  const generating = frame.generating || null;
  const { lost } = pane.setState(Array.isArray(frame.messages) ? frame.messages : [], generating, socket.connectionId);
  giveBackLostMessages(lost);
  sidebar.setGenerating(meta.id, Boolean(generating));
  if (state.awaitingState === meta.id) {
    state.awaitingState = null;
    const buffered = state.bufferedDeltas;
    state.bufferedDeltas = [];
    for (const delta of buffered) applyDelta(delta, { replaying: true });
  }
  renderConversationMeta();
  refreshComposer();
}

function onConversationCreated(frame) {
  const meta = frame.conversation;
  if (!meta || !meta.id) return;
  sidebar.upsert(meta);
  if (!state.conversationId && state.newChatRef && frame.ref === state.newChatRef) adoptConversation(meta);
}

/** The first message of a new chat created this conversation: it becomes the open one. */
function adoptConversation(meta) {
  state.conversationId = meta.id;
  state.conversation = { ...(sidebar.get(meta.id) || {}), ...meta };
  state.newChatRef = null;
  window.history.replaceState({ conversation: meta.id }, "", conversationUrl(meta.id));
  sidebar.setActive(meta.id);
  renderConversationMeta();
}

function onConversationUpdated(frame) {
  const meta = frame.conversation;
  if (!meta || !meta.id) return;
  sidebar.upsert(meta);
  if (meta.id !== state.conversationId) return;
  state.conversation = { ...(state.conversation || {}), ...meta };
  if (meta.shared === false) state.shareUrl = null;
  if (state.savingSystemPrompt !== null && (meta.system_prompt || "") === state.savingSystemPrompt) {
    state.savingSystemPrompt = null;
    setSystemPromptStatus("Saved.", "success");
  }
  renderConversationMeta();
}

function onConversationDeleted(frame) {
  const id = typeof frame.conversation === "object" && frame.conversation ? frame.conversation.id : frame.conversation;
  if (!id) return;
  sidebar.remove(id);
  const deletedHere = state.pendingDeletes.delete(id);
  if (id === state.conversationId) {
    startNewChat({ replace: true });
    if (!deletedHere) showError({ code: "deleted", text: "This conversation was deleted in another tab or window.", variant: "warning" });
  }
}

function onConversationShared(frame) {
  if (frame.conversation !== state.conversationId) return;
  state.shareUrl = frame.url || null;
  if (state.conversation) state.conversation.shared = Boolean(frame.url);
  renderShare();
  if (frame.url) {
    const input = $("share-link");
    input.focus();
    input.select();
  }
}

function onSearchResults(frame) {
  // Only the answer to the latest search, while its results are still wanted.
  if (sidebar.lastQuery === null) return;
  if (frame.ref ? frame.ref !== state.lastSearchRef : frame.query !== sidebar.lastQuery) return;
  sidebar.showResults(sidebar.lastQuery, Array.isArray(frame.results) ? frame.results : []);
}

function onMessageCreated(frame) {
  const msg = frame.message;
  if (!msg || typeof msg !== "object") return;
  const conversationId = frame.conversation;
  if (!state.conversationId && state.newChatRef && (frame.ref === state.newChatRef || !frame.ref)) {
    // Our first message of a new chat; conversation.created may come after it.
    adoptConversation(sidebar.get(conversationId) || { id: conversationId });
  }
  sidebar.touch(conversationId, msg.created_at); // newest first: no conversation.updated comes for a new message
  if (conversationId !== state.conversationId || isAwaitingState(conversationId)) return;
  if (pane.receiveUserMessage(msg, frame.ref) === "unknown") resync();
  refreshComposer();
}

function onReplyStarted(frame) {
  sidebar.setGenerating(frame.conversation, true);
  if (frame.conversation !== state.conversationId || isAwaitingState(frame.conversation)) return;
  const result = pane.startReply({ id: frame.message, parent: frame.parent || null, model: frame.model || null });
  if (result === "unknown") resync();
  refreshComposer();
}

function onReplyDelta(frame) {
  if (frame.conversation !== state.conversationId) return;
  if (isAwaitingState(frame.conversation)) {
    state.bufferedDeltas.push(frame);
    return;
  }
  applyDelta(frame, { replaying: false });
}

function applyDelta(frame, { replaying }) {
  const result = pane.applyDelta(frame);
  if (result === "gap" || (result === "unknown" && !replaying)) resync();
}

function onReplyFinished(frame, error) {
  sidebar.setGenerating(frame.conversation, false);
  if (frame.conversation !== state.conversationId || isAwaitingState(frame.conversation)) return;
  const msg = frame.message;
  if (!msg || typeof msg !== "object") {
    resync();
    return;
  }
  if (pane.finishReply(msg, { stopped: Boolean(frame.stopped), error }) === "unknown") resync();
  refreshComposer();
}

function onErrorFrame(frame) {
  const request = frame.ref ? state.requests.get(frame.ref) : null;
  if (frame.ref) state.requests.delete(frame.ref);
  const described = describeError(frame, state.limits, request ? request.type : null);
  if (frame.code === "rate_limited" && frame.retry_after) startCooldown(frame.retry_after);

  if (request) {
    switch (request.type) {
      case "message.send": {
        const text = pane.removePending(frame.ref);
        composer.restore(text !== null ? text : request.content);
        if (state.newChatRef === frame.ref) state.newChatRef = null;
        break;
      }
      case "message.edit":
      case "branch.switch":
      case "message.regenerate":
        resync();
        break;
      case "conversation.open":
        if (request.conversation === state.conversationId) {
          state.awaitingState = null;
          state.bufferedDeltas = [];
          if (frame.code === "not_found") {
            startNewChat({ replace: true });
            showError({ code: frame.code, text: "That conversation doesn't exist (it may have been deleted). Here is a new chat instead." });
            refreshComposer();
            return;
          }
          pane.clear();
        }
        break;
      case "conversation.rename":
        sidebar.revertTitle(request.conversation, request.oldTitle);
        break;
      case "conversation.configure":
        if (request.systemPrompt !== undefined) {
          state.savingSystemPrompt = null;
          setSystemPromptStatus("Not saved.", "danger");
        }
        renderConversationMeta();
        break;
      case "generation.stop":
        pane.unmarkStopping();
        break;
      case "conversation.delete":
        state.pendingDeletes.delete(request.conversation);
        break;
      default:
        break;
    }
  }
  showError(described);
  refreshComposer();
}

// --- Pane actions ---------------------------------------------------------------

function onPaneAction(action, detail) {
  const conversation = state.conversationId;
  switch (action) {
    case "changed":
      refreshComposer();
      break;
    case "stop":
      if (conversation && sendRequest("generation.stop", { conversation })) pane.markStopping(detail.id);
      break;
    case "regenerate":
      if (conversation) sendRequest("message.regenerate", { conversation });
      break;
    case "branch":
      if (conversation) sendRequest("branch.switch", { conversation, message: detail.target });
      break;
    case "edit-submit": {
      if (!conversation) break;
      const limit = Number(state.limits.max_content_chars) || 0;
      if (limit && detail.content.length > limit) {
        showError(describeError({ code: "too_large" }, state.limits, "message.edit"));
        break;
      }
      const ref = sendRequest("message.edit", { conversation, message: detail.id, content: detail.content }, { content: detail.content });
      if (ref) pane.replaceWithPendingEdit(detail.id, { ref, content: detail.content, connectionId: socket.connectionId });
      break;
    }
    default:
      break;
  }
}

// --- Composer ---------------------------------------------------------------------

function sendMessage(text) {
  const conversation = state.conversationId;
  const fields = { conversation, content: text };
  const model = modelPicker.value || state.selectedModel;
  if (model) fields.model = model;
  const ref = sendRequest("message.send", fields, { content: text, conversation });
  if (!ref) return;
  if (!conversation) state.newChatRef = ref;
  pane.addPending({ ref, content: text, parent: pane.lastMessageId(), connectionId: socket.connectionId });
  composer.clear();
  refreshComposer();
}

function cooldownSeconds() {
  return Math.max(0, Math.ceil((state.cooldownUntil - Date.now()) / 1000));
}

function startCooldown(retryAfter) {
  const seconds = Math.ceil(Number(retryAfter));
  if (!Number.isFinite(seconds) || seconds <= 0) return;
  state.cooldownUntil = Math.max(state.cooldownUntil, Date.now() + seconds * 1000);
  clearInterval(state.cooldownTimer);
  state.cooldownTimer = setInterval(() => {
    if (cooldownSeconds() === 0) {
      clearInterval(state.cooldownTimer);
      state.cooldownTimer = null;
    }
    refreshComposer();
  }, 1000);
  refreshComposer();
}

function connectionProblem() {
  switch (state.connection) {
    case "connected":
      return null;
    case "connecting":
      return "Connecting to the server…";
    case "offline":
      return state.connectionReason === "signed-out"
        ? "You're signed out. Reload the page to sign in again."
        : "You're offline. Messages can be sent again when the connection is back.";
    default:
      return "The connection was lost. Reconnecting…";
  }
}

/** Whether a message can be sent now, and if not, why (shown under the composer). */
function refreshComposer() {
  const connected = state.connection === "connected";
  pane.setOnline(connected);
  let reason = connectionProblem();
  if (!reason && cooldownSeconds() > 0) reason = `You're sending messages too fast — try again in ${cooldownSeconds()} s.`;
  if (!reason && pane.busy) reason = "A reply is being written. Wait for it to finish, or press Stop.";
  if (!reason && pane.hasPending()) reason = "Sending…";
  if (!reason && state.conversationId && isAwaitingState(state.conversationId) && pane.loading) reason = "Loading the conversation…";
  composer.setBlocked(reason);
}

function giveBackLostMessages(texts) {
  const lost = texts.filter(Boolean);
  if (!lost.length) return;
  composer.restore(lost.join("\n\n"));
  showError({
    code: "not_sent",
    text: "The connection dropped before your message was stored. It is back in the message box: send it again.",
    variant: "warning",
  });
}

// --- Opening conversations, new chat ----------------------------------------------

/** Shows a conversation without reloading the page; false when that is not possible (offline). */
function openConversation(id, { push = true } = {}) {
  if (!socket.connected) return false; // let the link load the page
  closeSidebarOnNarrowScreens();
  if (id === state.conversationId && !push) return true;
  if (id === state.conversationId && !isAwaitingState(id)) {
    composer.focus();
    return true;
  }
  state.conversationId = id;
  state.conversation = sidebar.get(id) || { id };
  state.shareUrl = null;
  state.newChatRef = null;
  if (push) window.history.pushState({ conversation: id }, "", conversationUrl(id));
  sidebar.setActive(id);
  pane.showLoading();
  requestState(id);
  renderConversationMeta();
  refreshComposer();
  return true;
}

function startNewChat({ push = true, replace = false } = {}) {
  state.conversationId = null;
  state.conversation = null;
  state.shareUrl = null;
  state.awaitingState = null;
  state.bufferedDeltas = [];
  state.newChatRef = null;
  pane.clear();
  sidebar.setActive(null);
  if (replace) window.history.replaceState({ conversation: null }, "", NEW_CHAT_URL);
  else if (push && window.location.pathname !== NEW_CHAT_URL) window.history.pushState({ conversation: null }, "", NEW_CHAT_URL);
  renderConversationMeta();
  refreshComposer();
  closeSidebarOnNarrowScreens();
  composer.focus();
}

window.addEventListener("popstate", () => {
  const id = conversationIdFromPath(window.location.pathname);
  if (id) {
    if (!openConversation(id, { push: false })) window.location.reload();
  } else if (window.location.pathname === NEW_CHAT_URL) {
    startNewChat({ push: false });
  } else {
    window.location.reload();
  }
});

$("new-chat").addEventListener("click", (event) => {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  startNewChat();
});

function closeSidebarOnNarrowScreens() {
  const offcanvas = window.bootstrap && window.bootstrap.Offcanvas.getInstance($("sidebar"));
  if (offcanvas) offcanvas.hide();
}

// --- Rename, delete -----------------------------------------------------------------

function renameConversation(id, title, oldTitle) {
  return sendRequest("conversation.rename", { conversation: id, title }, { conversation: id, oldTitle }) !== null;
}

function confirmDelete(id, title) {
  const modalElement = $("delete-modal");
  const Modal = window.bootstrap && window.bootstrap.Modal;
  if (!Modal) {
    if (window.confirm(`Delete “${title}”? This cannot be undone.`)) deleteConversation(id);
    return;
  }
  $("delete-modal-name").textContent = title;
  $("confirm-delete").dataset.id = id;
  Modal.getOrCreateInstance(modalElement).show();
}

function deleteConversation(id) {
  if (sendRequest("conversation.delete", { conversation: id }, { conversation: id })) state.pendingDeletes.add(id);
}

$("confirm-delete").addEventListener("click", (event) => {
  const id = event.currentTarget.dataset.id;
  if (id) deleteConversation(id);
  const modal = window.bootstrap && window.bootstrap.Modal.getInstance($("delete-modal"));
  if (modal) modal.hide();
});

// --- Navbar: model, settings, export, share ---------------------------------------------

function modelLabel(model) {
  const label = model.label || model.id;
  if (model.available !== false) return label;
  return `${label} — unavailable${model.reason ? `: ${model.reason}` : ""}`;
}

function renderModelPicker() {
  if (!state.models.length) return; // keep what the server rendered
  const wanted = (state.conversation && state.conversation.model) || (state.conversationId ? modelPicker.value : state.selectedModel);
  const options = state.models.map((model) =>
    h("option", {
      text: modelLabel(model),
      attrs: { value: model.id, title: model.available === false ? model.reason || "Not available" : null },
      disabled: model.available === false,
    }),
  );
  modelPicker.replaceChildren(...options);
  selectModel(wanted);
  if (!state.conversationId) state.selectedModel = modelPicker.value || state.selectedModel;
}

/** Selects a model in the picker; one that is no longer offered is shown, disabled. */
function selectModel(id) {
  const options = Array.from(modelPicker.options);
  if (id && !options.some((o) => o.value === id)) {
    modelPicker.append(h("option", { text: `${id} — not offered any more`, attrs: { value: id }, disabled: true }));
  }
  if (id) {
    modelPicker.value = id;
    if (!state.conversationId && modelPicker.selectedOptions[0] && modelPicker.selectedOptions[0].disabled) id = null;
  }
  if (!id) {
    const firstAvailable = Array.from(modelPicker.options).find((o) => !o.disabled);
    if (firstAvailable) modelPicker.value = firstAvailable.value;
  }
}

modelPicker.addEventListener("change", () => {
  const model = modelPicker.value;
  if (!state.conversationId) {
    state.selectedModel = model;
    return;
  }
  if (state.conversation && state.conversation.model === model) return;
  sendRequest("conversation.configure", { conversation: state.conversationId, model }, { conversation: state.conversationId });
});

$("system-prompt-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.conversationId) return;
  const value = $("system-prompt").value;
  const limit = Number(state.limits.max_system_prompt_chars) || 0;
  if (limit && value.length > limit) {
    setSystemPromptStatus(`Too long: at most ${limit.toLocaleString()} characters.`, "danger");
    return;
  }
  const ref = sendRequest(
    "conversation.configure",
    { conversation: state.conversationId, system_prompt: value },
    { conversation: state.conversationId, systemPrompt: value },
  );
  if (ref) {
    state.savingSystemPrompt = value;
    setSystemPromptStatus("Saving…", "secondary");
  }
});

function setSystemPromptStatus(text, tone) {
  const node = $("system-prompt-status");
  node.textContent = text;
  node.className = `small text-${tone}${tone === "secondary" ? "" : "-emphasis"}`;
}

/** Everything in the navbar and the page that depends on the open conversation. */
function renderConversationMeta() {
  const meta = state.conversation;
  const open = Boolean(state.conversationId);
  const title = open ? conversationTitle(meta) : "New chat";
  document.title = `${title} — ${APP_NAME}`;
  $("conversation-heading").textContent = title;

  if (open && meta && meta.model) selectModel(meta.model);
  else if (!open) selectModel(state.selectedModel);

  const promptField = $("system-prompt");
  if (document.activeElement !== promptField && state.savingSystemPrompt === null) {
    promptField.value = (meta && meta.system_prompt) || "";
  }
  for (const node of document.querySelectorAll("[data-needs-conversation]")) {
    if ("disabled" in node && node.tagName !== "A") node.disabled = !open;
  }
  $("settings-new-chat-note").hidden = open;

  for (const [linkId, suffix] of [["export-md", "export.md"], ["export-json", "export.json"]]) {
    const link = $(linkId);
    if (open) {
      link.href = conversationUrl(state.conversationId) + suffix;
      link.classList.remove("disabled");
      link.removeAttribute("aria-disabled");
      link.removeAttribute("tabindex");
    } else {
      link.removeAttribute("href");
      link.classList.add("disabled");
      link.setAttribute("aria-disabled", "true");
      link.setAttribute("tabindex", "-1");
    }
  }
  renderShare();
}

function renderShare() {
  const meta = state.conversation || {};
  const open = Boolean(state.conversationId);
  const url = state.shareUrl || (typeof meta.shared === "string" ? meta.shared : null) || meta.share_url || null;
  const shared = open && Boolean(url || meta.shared);
  const status = $("share-status");
  if (!open) status.textContent = "A new chat can be shared once it has a first message.";
  else if (url) status.textContent = "Anyone with this link can read a copy of the conversation as it is now (its current branch).";
  else if (shared) status.textContent = "This conversation is shared. Its link is shown only once: a new link replaces the old one.";
  else status.textContent = "Not shared. Sharing publishes a read-only copy of the current branch.";
  $("share-link-group").hidden = !url;
  $("share-link").value = url ? new URL(url, window.location.origin).href : "";
  const shareButton = $("share-button");
  shareButton.hidden = Boolean(url);
  shareButton.textContent = shared ? "Create a new link" : "Create link";
  $("unshare-button").hidden = !shared;
}

$("share-button").addEventListener("click", () => {
  if (state.conversationId) sendRequest("conversation.share", { conversation: state.conversationId }, { conversation: state.conversationId });
});

$("unshare-button").addEventListener("click", () => {
  if (state.conversationId) sendRequest("conversation.unshare", { conversation: state.conversationId }, { conversation: state.conversationId });
});

$("share-copy").addEventListener("click", (event) => {
  const button = event.currentTarget;
  copyText($("share-link").value).then((ok) => flashButton(button, ok));
});

function applyLimits() {
  const limits = state.limits;
  composer.setLimit(limits.max_content_chars);
  sidebar.maxTitleChars = Number(limits.max_title_chars) || null;
  const prompt = $("system-prompt");
  if (Number(limits.max_system_prompt_chars) > 0) prompt.maxLength = Number(limits.max_system_prompt_chars);
}

// --- Connection indicator ------------------------------------------------------------

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

function onConnectionStatus(status, detail) {
  const wasSignedOut = state.connectionReason === "signed-out";
  state.connection = status;
  state.connectionReason = detail.reason || null;
  const indicator = $("connection-status");
  indicator.dataset.state = status;
  indicator.dataset.reason = detail.reason || "";
  let text = STATUS_TEXT[status] || status;
  if (status === "offline" && detail.reason === "signed-out") text = "Signed out";
  indicator.querySelector(".status-text").textContent = text;
  let title = text;
  if (status === "reconnecting" && detail.delay) title = `Connection lost. Trying again in ${Math.max(1, Math.round(detail.delay / 1000))} s.`;
  indicator.title = title;
  if (status === "offline" && detail.reason === "signed-out" && !wasSignedOut) {
    showError({ code: "signed_out", text: "You're signed out. Reload the page to sign in again.", persistent: true });
  }
  refreshComposer();
}

// --- Errors ---------------------------------------------------------------------------

const errorArea = $("error-area");

/** Shows a plain-text alert at the top of the pane; it goes away by itself unless persistent. */
function showError({ text, detail = "", code = "", variant = "danger", persistent = false, retry_after: retryAfter }) {
  for (const old of errorArea.querySelectorAll(".app-alert")) {
    if (old.querySelector(".app-alert-text").textContent === text) old.remove();
  }
  const alert = buildAlert({ text, detail, code, variant });
  errorArea.append(alert);
  while (errorArea.childElementCount > 3) errorArea.firstElementChild.remove();
  if (!persistent) {
    // An alert that says "try again in N s" goes when N s have passed; others after 8 s.
    const wait = Number(retryAfter);
    const seconds = Number.isFinite(wait) && wait > 0 ? Math.max(3, wait + 0.5) : 8;
    setTimeout(() => alert.remove(), seconds * 1000);
  }
}

errorArea.addEventListener("click", (event) => {
  const button = event.target.closest('[data-action="dismiss"]');
  if (button) button.closest(".app-alert").remove();
});

// --- Start --------------------------------------------------------------------------------

function start() {
  sidebar.hydrate();
  pane.hydrateFromDom();
  if (state.conversationId) {
    state.conversation = { ...(sidebar.get(state.conversationId) || {}), ...readConversationMeta(), id: state.conversationId };
    const url = conversationUrl(state.conversationId);
    if (window.location.pathname !== url) window.history.replaceState({ conversation: state.conversationId }, "", url);
  }
  applyLimits();
  renderConversationMeta();
  refreshComposer();
  if (window.matchMedia && window.matchMedia("(pointer: fine)").matches) composer.focus();
  socket.start();
}

/** The open conversation's metadata that the server rendered into the page. */
function readConversationMeta() {
  const main = $("main");
  const meta = {};
  if (main.dataset.model) meta.model = main.dataset.model;
  if (main.dataset.shared) meta.shared = main.dataset.shared === "true";
  const prompt = $("system-prompt");
  meta.system_prompt = prompt.value;
  return meta;
}

start();
