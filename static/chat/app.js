// The chat page's entry point: builds the page's parts from its elements, wires them
// together, handles `hello`, and connects. Each part has one job:
//
//   state.js          the page's state (the only module that writes it)
//   connection.js     the socket, requests and their refs, frame and error routing
//   conversation.js   the open conversation: opening, streaming, sending
//   conversations.js  the list of conversations: its frames, rename, pin, archive, delete, search
//   toolbar.js        the open conversation's header: title, model, system prompt, share
//   alerts.js         alerts at the top of the pane
//   menu.js, drawer.js   the navbar's menus, the sidebar as a drawer on narrow screens
//   shortcuts.js      keyboard shortcuts and their help dialog
//   usage.js          today's hosted-model allowance, in the account menu
//   reveal.js         a search result's message, shown and marked in the pane
//   pane.js, sidebar.js, composer.js, render.js   the components that draw the page
//     (sidebar.js's parts: conversation-menu.js, archive.js, search.js, highlight.js, groups.js)
//
// The WebSocket protocol: shared PROTOCOL.md, docs/protocol.md.

import { boot, conversationUrl, socketUrl } from "./boot.js";
import { ChatState } from "./state.js";
import { Alerts } from "./alerts.js";
import { Connection } from "./connection.js";
import { MessagePane } from "./pane.js";
import { Sidebar } from "./sidebar.js";
import { Composer } from "./composer.js";
import { Toolbar } from "./toolbar.js";
import { OpenConversation } from "./conversation.js";
import { ConversationList } from "./conversations.js";
import { Drawer } from "./drawer.js";
import { setupMenus } from "./menu.js";
import { Shortcuts } from "./shortcuts.js";
import { showUsage } from "./usage.js";

const $ = (id) => document.getElementById(id);

const state = new ChatState({ conversation: boot.conversation, limits: boot.limits, selectedModel: boot.selectedModel });
const alerts = new Alerts($("error-area"));
const connection = new Connection({ url: socketUrl(), state, alerts, indicator: $("connection-status") });

// The components call back through these two, built right after them.
let current = null;
let conversations = null;

const pane = new MessagePane({
  list: $("message-list"),
  scroller: $("message-scroller"),
  jumpButton: $("jump-bottom"),
  emptyState: $("empty-state"),
  announcer: $("reply-announcer"),
  onAction: (action, detail) => current.onPaneAction(action, detail),
});

setupMenus();
const drawer = new Drawer({
  panel: $("sidebar"),
  toggle: document.querySelector('[data-testid="sidebar-toggle"]'),
  backdrop: document.querySelector(".sidebar-backdrop"),
  outside: [document.querySelector(".app-navbar"), $("main")],
});

const sidebar = new Sidebar({
  drawer,
  list: $("conversation-list"),
  emptyNote: $("conversation-empty"),
  filterNote: $("conversation-no-match"),
  search: {
    form: $("search-form"),
    input: $("search"),
    results: $("search-results"),
    resultsList: $("search-results-list"),
    resultsLabel: $("search-results-label"),
    resultsClose: $("search-results-close"),
  },
  archived: { section: $("archived"), list: $("archived-list"), count: $("archived-count") },
  urlFor: conversationUrl,
  onOpen: (id, options) => current.open(id, options),
  onRename: (id, title, oldTitle) => conversations.rename(id, title, oldTitle),
  onDelete: (id, title) => conversations.deleteWithUndo(id, title),
  onPin: (id, pinned) => conversations.pin(id, pinned),
  onArchive: (id, archived) => conversations.archive(id, archived),
  onCopyLink: (id) => conversations.copyLink(id),
  onSearch: (query) => conversations.search(query),
});

const composer = new Composer({
  form: $("composer-form"),
  textarea: $("composer"),
  sendButton: $("send"),
  stopButton: $("stop"),
  hint: $("composer-hint"),
  counter: $("composer-counter"),
  onSubmit: (text) => current.sendMessage(text),
  onStop: () => current.onPaneAction("stop", {}),
});

const toolbar = new Toolbar({ state, connection, alerts });

current = new OpenConversation({ state, connection, alerts, pane, composer, sidebar, toolbar, newChatButton: $("new-chat") });

$("empty-state").addEventListener("click", (event) => {
  const suggestion = event.target.closest("[data-suggestion]");
  if (suggestion) composer.fill(suggestion.dataset.suggestion);
});

// The narrow screens' New chat, in the header: the sidebar's button does the work.
document.querySelector('[data-testid="header-new-chat"]').addEventListener("click", (event) => {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  $("new-chat").click();
  if (window.matchMedia("(pointer: fine)").matches) composer.focus();
});

conversations = new ConversationList({
  state,
  connection,
  sidebar,
  openConversation: current,
  undoBar: { bar: $("undo-bar"), text: $("undo-text"), undoButton: $("undo-delete") },
});

new Shortcuts({
  dialog: $("shortcuts-dialog"),
  openButtons: document.querySelectorAll("[data-show-shortcuts]"),
  newChat: () => {
    $("new-chat").click();
    composer.focus();
  },
  focusComposer: () => composer.focus(),
  copyLastReply: () => {
    const buttons = document.querySelectorAll('[data-testid="message"][data-role="assistant"] [data-testid="copy-message"]');
    if (buttons.length) buttons[buttons.length - 1].click();
  },
});

/** What the server allows, for the parts that check it before sending. */
function applyLimits() {
  const limits = state.limits;
  composer.setLimit(limits.max_content_chars);
  sidebar.maxTitleChars = Number(limits.max_title_chars) || null;
  toolbar.applyLimits(limits);
}

/** hello: the first frame of every connection, with the limits, the models, the list,
 *  the account's default model and today's allowance. */
connection.on("hello", (frame) => {
  state.mergeLimits(frame.limits);
  applyLimits();
  state.setUsage(frame.usage);
  showUsage($("usage-line"), state.usage);
  state.setDefaultModel(frame.preferences && frame.preferences.default_model);
  state.setModels(frame.models);
  toolbar.renderModelPicker();
  conversations.setConversations(frame.conversations, frame.archived);
  current.reconnected();
});

function start() {
  sidebar.hydrate();
  current.hydrate();
  composer.switchDraft(state.conversationId); // a draft kept from before a reload
  applyLimits();
  toolbar.render();
  current.refreshComposer();
  if (window.matchMedia && window.matchMedia("(pointer: fine)").matches) composer.focus();
  connection.start();
}

start();
