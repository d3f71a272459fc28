// The sidebar: the list of conversations (newest first by updated_at, under date
// headings: groups.js), the open one highlighted, a "…" menu per conversation (rename,
// delete: its undo is conversations.js's), the title filter and the full-text search
// results. It does not talk to the socket:
// it calls onOpen(id), onRename(id, title, oldTitle), onDelete(id, title) and
// onSearch(query).

import { labelGroups } from "./groups.js";
import { conversationListRoving } from "./roving.js";
import { buildConversationItem, buildConversationMenu, buildRenameForm, buildSearchResult, conversationTitle, h } from "./render.js";

function timeOf(meta) {
  const t = Date.parse(meta && meta.updated_at);
  return Number.isNaN(t) ? Infinity : t; // unknown: treat as newest
}

function isPlainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

export class Sidebar {
  constructor({ drawer, list, emptyNote, filterNote, searchForm, searchInput, results, resultsList, resultsLabel, resultsClose, urlFor, onOpen, onRename, onDelete, onSearch }) {
    Object.assign(this, { drawer, list, emptyNote, filterNote, searchForm, searchInput, results, resultsList, resultsLabel, resultsClose, urlFor, onOpen, onRename, onDelete, onSearch });
    this.metas = new Map();
    this.activeId = null;
    this.maxTitleChars = null;
    this.lastQuery = null;
    this.roving = conversationListRoving(list); // one Tab stop for the list, arrows inside

    this.list.addEventListener("click", (event) => this.onListClick(event));
    this.list.addEventListener("submit", (event) => this.onRenameSubmit(event));
    this.list.addEventListener("keydown", (event) => this.onRenameKeydown(event));
    this.list.addEventListener("focusout", (event) => this.onRenameBlur(event));
    this.list.addEventListener("keydown", (event) => this.onMenuKeydown(event));
    document.addEventListener("click", (event) => {
      if (this.openMenu && !this.openMenu.closest('[data-testid="conversation-item"]').contains(event.target)) this.closeMenu();
    });
    this.searchInput.addEventListener("input", () => this.onSearchInput());
    this.searchInput.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.searchInput.value) {
        event.preventDefault();
        this.clearSearch();
      }
    });
    this.searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const query = this.searchInput.value.trim();
      if (!query) {
        this.clearSearch();
        return;
      }
      this.lastQuery = query;
      this.onSearch(query);
    });
    this.resultsClose.addEventListener("click", () => this.clearSearch());
    this.resultsList.addEventListener("click", (event) => {
      const link = event.target.closest("a.search-result");
      if (link && isPlainClick(event) && this.onOpen(link.dataset.id) !== false) event.preventDefault();
    });
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
      });
      if (item.classList.contains("active")) this.activeId = item.dataset.id;
    }
    this.afterChange();
  }

  get(id) {
    return this.metas.get(id) || null;
  }

  /** Replaces the whole list (from `hello`), keeping the server's order. */
  setConversations(conversations) {
    this.metas = new Map();
    const fragment = document.createDocumentFragment();
    for (const meta of conversations) {
      this.metas.set(meta.id, meta);
      fragment.append(this.buildItem(meta));
    }
    this.list.replaceChildren(fragment);
    this.afterChange();
  }

  /** Adds or updates one conversation and puts it at its place by updated_at. */
  upsert(meta, { animateTitle = true } = {}) {
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
    if (!meta || !time || timeOf({ updated_at: time }) <= timeOf(meta)) return;
    this.upsert({ id, updated_at: time }, { animateTitle: false });
  }

  remove(id) {
    this.metas.delete(id);
    const item = this.itemFor(id);
    if (item) item.remove();
    for (const link of this.resultsList.querySelectorAll("a.search-result")) {
      if (link.dataset.id === id) link.closest("li").remove();
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
    return item;
  }

  setItemTitle(item, meta) {
    item.querySelector(".conversation-title").textContent = conversationTitle(meta);
    item.classList.toggle("is-untitled", !(meta.title || "").trim());
  }

  placeItem(item, meta) {
    const time = timeOf(meta);
    for (const other of this.list.children) {
      if (other === item) continue;
      if (timeOf(this.metas.get(other.dataset.id)) <= time) {
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
    const id = item.dataset.id;
    const button = event.target.closest("[data-action]");
    if (button) {
      const action = button.dataset.action;
      if (action === "menu") {
        if (this.openMenu && item.contains(this.openMenu)) this.closeMenu({ focusButton: true });
        else this.showMenu(item);
        return;
      }
      this.closeMenu();
      if (action === "rename") this.startRename(id);
      else if (action === "delete") this.onDelete(id, conversationTitle(this.metas.get(id)));
      return;
    }
    const link = event.target.closest(".conversation-link");
    if (link && isPlainClick(event) && this.onOpen(id) !== false) event.preventDefault();
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

  onSearchInput() {
    this.applyFilter();
    if (!this.searchInput.value.trim()) this.hideResults();
  }

  /** Hides the conversations whose title does not contain what is typed in the search box (and those being deleted). */
  applyFilter() {
    const query = this.searchInput.value.trim().toLowerCase();
    let shown = 0;
    for (const item of this.list.children) {
      const title = conversationTitle(this.metas.get(item.dataset.id)).toLowerCase();
      const match = !query || title.includes(query);
      item.hidden = !match || item.classList.contains("is-deleting");
      if (match) shown += 1;
    }
    this.filterNote.hidden = !query || shown > 0 || this.metas.size === 0;
    labelGroups(this.list.children, (item) => timeOf(this.metas.get(item.dataset.id)));
    this.roving.sync();
  }

  // --- The "…" menu of a conversation ------------------------------------------------

  showMenu(item) {
    this.closeMenu();
    const button = item.querySelector('[data-action="menu"]');
    this.openMenu = buildConversationMenu();
    item.querySelector(".conversation-actions").append(this.openMenu);
    button.setAttribute("aria-expanded", "true");
    this.openMenu.querySelector(".menu-item").focus();
  }

  closeMenu({ focusButton = false } = {}) {
    const menu = this.openMenu;
    if (!menu) return;
    this.openMenu = null;
    const button = menu.parentElement.querySelector('[data-action="menu"]');
    const hadFocus = menu.contains(document.activeElement);
    menu.remove();
    button.setAttribute("aria-expanded", "false");
    if (focusButton || hadFocus) button.focus();
  }

  onMenuKeydown(event) {
    const menu = event.target.closest(".conversation-menu");
    if (!menu) return;
    const items = [...menu.querySelectorAll(".menu-item")];
    const index = items.indexOf(document.activeElement);
    if (event.key === "Escape" || event.key === "Tab") {
      if (event.key === "Escape") event.preventDefault();
      this.closeMenu({ focusButton: true });
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      items[(index + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
    }
  }

  showResults(query, results) {
    this.resultsLabel.textContent = `Results for “${query}”`;
    const fragment = document.createDocumentFragment();
    for (const result of results) {
      if (!result || !result.conversation) continue;
      fragment.append(buildSearchResult(result, this.urlFor(result.conversation.id)));
    }
    if (!fragment.childNodes.length) fragment.append(h("li", { className: "search-empty", text: "No conversation matches." }));
    this.resultsList.replaceChildren(fragment);
    this.results.hidden = false;
  }

  hideResults() {
    this.results.hidden = true;
    this.resultsList.replaceChildren();
    this.lastQuery = null;
  }

  clearSearch() {
    this.searchInput.value = "";
    this.hideResults();
    this.applyFilter();
    this.searchInput.focus();
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
