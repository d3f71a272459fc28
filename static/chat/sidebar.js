// The sidebar: the list of conversations (pinned ones first, under "Pinned", then the
// others newest first by updated_at, under date headings: groups.js), the open one
// highlighted, a "…" menu per conversation (conversation-menu.js: rename, pin, archive,
// copy link, delete; the delete's undo is conversations.js's), the Archived section
// (archive.js), the title filter and the full-text search (search.js). It does not talk
// to the socket: it calls onOpen(id, {message}), onRename(id, title, oldTitle),
// onDelete(id, title), onPin(id, pinned), onArchive(id, archived), onCopyLink(id) and
// onSearch(query).

import { ArchivedSection } from "./archive.js";
import { ConversationMenu } from "./conversation-menu.js";
import { dateGroup, labelGroups } from "./groups.js";
import { conversationListRoving } from "./roving.js";
import { SearchPanel } from "./search.js";
import { buildConversationItem, buildRenameForm, conversationTitle } from "./render.js";

function timeOf(meta) {
  const t = Date.parse(meta && meta.updated_at);
  return Number.isNaN(t) ? Infinity : t; // unknown: treat as newest
}

function isPlainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

/** Whether `a` comes before `b` in the list: pinned ones first, then the newest. */
function comesBefore(a, b) {
  if (Boolean(a && a.pinned) !== Boolean(b && b.pinned)) return Boolean(a && a.pinned);
  return timeOf(a) >= timeOf(b);
}

export class Sidebar {
  constructor({ drawer, list, emptyNote, filterNote, search, archived, urlFor, onOpen, onRename, onDelete, onPin, onArchive, onCopyLink, onSearch }) {
    Object.assign(this, { drawer, list, emptyNote, filterNote, urlFor, onOpen, onRename, onDelete, onPin, onArchive, onCopyLink });
    this.metas = new Map();
    this.activeId = null;
    this.maxTitleChars = null;
    this.roving = conversationListRoving(list); // one Tab stop for the list, arrows inside
    this.menu = new ConversationMenu({ list, metaOf: (id) => this.metas.get(id), onChoose: (action, id) => this.onMenuChoice(action, id) });
    this.search = new SearchPanel({ ...search, urlFor, onFilter: () => this.applyFilter(), onSearch, onOpen: (id, options) => this.onOpen(id, options) });
    this.archived = new ArchivedSection({ ...archived, urlFor, onOpen: (id) => this.onOpen(id), onUnarchive: (id) => this.onArchive(id, false) });

    this.list.addEventListener("click", (event) => this.onListClick(event));
    this.list.addEventListener("submit", (event) => this.onRenameSubmit(event));
    this.list.addEventListener("keydown", (event) => this.onRenameKeydown(event));
    this.list.addEventListener("focusout", (event) => this.onRenameBlur(event));
  }

  /** The query whose message results are wanted (null: none). */
  get lastQuery() {
    return this.search.lastQuery;
  }

  /** On narrow screens the sidebar is a drawer over the pane (drawer.js): it closes when a conversation is opened. */
  closeOnNarrowScreens() {
    this.drawer.close();
  }

  // --- The list ------------------------------------------------------------------

  /** Reads the list the server rendered into the page. */
  hydrate() {
    for (const item of this.list.querySelectorAll('[data-testid="conversation-item"]')) {
      const titleNode = item.querySelector(".conversation-title");
      this.metas.set(item.dataset.id, {
        id: item.dataset.id,
        title: item.classList.contains("is-untitled") ? "" : titleNode ? titleNode.textContent : "",
        updated_at: item.dataset.updatedAt || null,
        pinned: item.dataset.pinned === "true",
        shared: item.dataset.shared === "true",
      });
      if (item.classList.contains("active")) this.activeId = item.dataset.id;
    }
    this.afterChange();
  }

  get(id) {
    return this.metas.get(id) || this.archived.get(id);
  }

  /** Replaces the whole list and the Archived section (from `hello`), keeping the server's order. */
  setConversations(conversations, archived = []) {
    this.metas = new Map();
    const fragment = document.createDocumentFragment();
    for (const meta of conversations) {
      if (meta.archived) continue;
      this.metas.set(meta.id, meta);
      fragment.append(this.buildItem(meta));
    }
    this.list.replaceChildren(fragment);
    this.archived.set([...archived, ...conversations.filter((meta) => meta.archived)]);
    this.afterChange();
  }

  /** Adds or updates one conversation and puts it at its place (pinned first, then by updated_at); an archived one goes to the Archived section. */
  upsert(meta, { animateTitle = true } = {}) {
    const wasArchived = this.archived.has(meta.id);
    const archived = meta.archived === undefined ? wasArchived : Boolean(meta.archived);
    if (archived) {
      this.archived.upsert({ ...(this.metas.get(meta.id) || {}), ...meta });
      if (!this.metas.has(meta.id)) return;
      const item = this.itemFor(meta.id);
      const hadFocus = item && item.contains(document.activeElement);
      this.remove(meta.id, { keepResults: true });
      const stop = this.list.querySelector('.conversation-link[tabindex="0"], [data-action="menu"][tabindex="0"]');
      if (hadFocus) (stop || this.archived.section.querySelector("summary")).focus(); // not lost to the page's body
      return;
    }
    if (wasArchived) {
      meta = { ...this.archived.get(meta.id), ...meta };
      this.archived.remove(meta.id);
    }
    const old = this.metas.get(meta.id);
    const merged = { ...(old || {}), ...meta };
    this.metas.set(meta.id, merged);
    let item = this.itemFor(meta.id);
    const titleChanged = !old || conversationTitle(old) !== conversationTitle(merged);
    if (!item) {
      item = this.buildItem(merged);
    } else if (titleChanged && !item.querySelector(".rename-form")) {
      this.setItemTitle(item, merged);
    }
    item.dataset.updatedAt = merged.updated_at || "";
    if (titleChanged && animateTitle) fadeIn(item.querySelector(".conversation-title"));
    this.placeItem(item, merged);
    this.afterChange();
  }

  /** A message was stored in that conversation at `time`: it moves up to its place by time. */
  touch(id, time) {
    const meta = this.metas.get(id);
    if (!meta || !time || timeOf({ updated_at: time }) <= timeOf(meta)) return; // archived ones are not in `metas`
    this.upsert({ id, updated_at: time }, { animateTitle: false });
  }

  remove(id, { keepResults = false } = {}) {
    this.metas.delete(id);
    const item = this.itemFor(id);
    if (item) item.remove();
    if (!keepResults) {
      this.archived.remove(id);
      this.search.forget(id);
    }
    this.afterChange();
  }

  setActive(id) {
    this.activeId = id;
    for (const item of this.list.querySelectorAll('[data-testid="conversation-item"]')) {
      const active = item.dataset.id === id;
      item.classList.toggle("active", active);
      const link = item.querySelector(".conversation-link");
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    this.roving.sync();
  }

  /** A reply is being written in that conversation (shown as a small pulse). */
  setGenerating(id, generating) {
    const item = this.itemFor(id);
    if (item) item.classList.toggle("is-generating", generating);
  }

  itemFor(id) {
    return this.list.querySelector(`[data-testid="conversation-item"][data-id="${CSS.escape(id)}"]`);
  }

  buildItem(meta) {
    const item = buildConversationItem(meta, { href: this.urlFor(meta.id), active: meta.id === this.activeId });
    item.classList.toggle("is-untitled", !(meta.title || "").trim());
    item.dataset.pinned = String(Boolean(meta.pinned));
    return item;
  }

  setItemTitle(item, meta) {
    item.querySelector(".conversation-title").textContent = conversationTitle(meta);
    item.classList.toggle("is-untitled", !(meta.title || "").trim());
  }

  placeItem(item, meta) {
    item.dataset.pinned = String(Boolean(meta.pinned));
    for (const other of this.list.children) {
      if (other === item) continue;
      if (comesBefore(meta, this.metas.get(other.dataset.id))) {
        if (other.previousElementSibling !== item) other.before(item);
        return;
      }
    }
    if (this.list.lastElementChild !== item) this.list.append(item); // moving a node restarts its animations and drops its focus
  }

  afterChange() {
    this.emptyNote.hidden = this.metas.size > 0;
    this.applyFilter();
  }

  /** A delete waits for its undo time: the item is hidden (deleting), or shown again. */
  setDeleting(id, deleting) {
    const item = this.itemFor(id);
    if (!item) return;
    item.classList.toggle("is-deleting", deleting);
    this.applyFilter();
  }

  // --- Clicks, rename --------------------------------------------------------------

  onListClick(event) {
    const item = event.target.closest('[data-testid="conversation-item"]');
    if (!item) return;
    if (this.menu.onClick(event, item)) return;
    const link = event.target.closest(".conversation-link");
    if (link && isPlainClick(event) && this.onOpen(item.dataset.id) !== false) event.preventDefault();
  }

  /** An item of a conversation's "…" menu was chosen. */
  onMenuChoice(action, id) {
    const meta = this.metas.get(id) || { id };
    if (action === "rename") this.startRename(id);
    else if (action === "delete") this.onDelete(id, conversationTitle(meta));
    else if (action === "pin" || action === "unpin") this.onPin(id, action === "pin");
    else if (action === "archive") this.onArchive(id, true);
    else if (action === "copy-link") this.onCopyLink(id);
  }

  startRename(id) {
    const item = this.itemFor(id);
    if (!item || item.querySelector(".rename-form")) return;
    const meta = this.metas.get(id) || { id };
    const form = buildRenameForm((meta.title || "").trim(), this.maxTitleChars);
    form.dataset.id = id;
    item.classList.add("is-renaming");
    item.querySelector(".conversation-link").hidden = true;
    item.prepend(form);
    const input = form.querySelector("input");
    input.focus();
    input.select();
  }

  finishRename(form, save) {
    if (form.dataset.done) return;
    form.dataset.done = "1";
    const item = form.closest('[data-testid="conversation-item"]');
    const id = form.dataset.id;
    const title = form.querySelector("input").value.trim();
    const meta = this.metas.get(id) || { id };
    form.remove();
    item.classList.remove("is-renaming");
    item.querySelector(".conversation-link").hidden = false;
    if (save && title && title !== (meta.title || "").trim()) {
      if (this.onRename(id, title, meta.title || "") !== false) {
        meta.title = title; // optimistic; conversation.updated confirms, an error reverts
        this.setItemTitle(item, meta);
      }
    }
    const renameButton = item.querySelector('[data-action="rename"]');
    if (renameButton && item.contains(document.activeElement) === false && save !== "blur") renameButton.focus();
  }

  onRenameSubmit(event) {
    const form = event.target.closest(".rename-form");
    if (!form) return;
    event.preventDefault();
    this.finishRename(form, true);
  }

  onRenameKeydown(event) {
    const form = event.target.closest(".rename-form");
    if (form && event.key === "Escape") {
      event.preventDefault();
      this.finishRename(form, false);
    }
  }

  onRenameBlur(event) {
    const form = event.target.closest(".rename-form");
    if (form && !form.contains(event.relatedTarget)) this.finishRename(form, "blur");
  }

  /** A rename failed on the server: show the old title again. */
  revertTitle(id, oldTitle) {
    const meta = this.metas.get(id);
    const item = this.itemFor(id);
    if (!meta || !item) return;
    meta.title = oldTitle;
    this.setItemTitle(item, meta);
  }

  // --- Filter and search -----------------------------------------------------------

  /** Hides the conversations whose title does not contain what is typed in the search box (and those being deleted). */
  applyFilter() {
    const query = this.search.query.toLowerCase();
    let shown = 0;
    for (const item of this.list.children) {
      const title = conversationTitle(this.metas.get(item.dataset.id)).toLowerCase();
      const match = !query || title.includes(query);
      item.hidden = !match || item.classList.contains("is-deleting");
      if (match) shown += 1;
    }
    this.filterNote.hidden = !query || shown > 0 || this.metas.size === 0;
    const now = new Date();
    labelGroups(this.list.children, (item) => {
      const meta = this.metas.get(item.dataset.id);
      return meta && meta.pinned ? "Pinned" : dateGroup(timeOf(meta), now);
    });
    this.roving.sync();
  }

  showResults(query, results) {
    this.search.show(query, results);
  }

  clearSearch() {
    this.search.clear();
  }
}

/** Restarts the fade-in animation of a new title; the class goes when it ends, so that moving the item does not replay it. */
function fadeIn(node) {
  if (!node) return;
  node.classList.remove("title-fade");
  void node.offsetWidth; // restart the animation
  node.classList.add("title-fade");
  node.addEventListener("animationend", () => node.classList.remove("title-fade"), { once: true });
}
