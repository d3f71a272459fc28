// The sidebar's search box: typing filters the titles at once (the sidebar's filter) and,
// after a short pause, searches the messages too (conversation.search); Enter searches at
// once. The results show the matched words marked (highlight.js) and open the
// conversation at the message found.

import { highlighted, queryWords } from "./highlight.js";
import { conversationTitle, h } from "./render.js";

export const SEARCH_PAUSE_MS = 400;
const MIN_QUERY_CHARS = 2;

function isPlainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

/** One result: the title and the snippet, the query's words marked. */
export function buildSearchResult(result, href, words) {
  const meta = result.conversation || {};
  return h(
    "li",
    {},
    h(
      "a",
      { className: "search-result", dataset: { testid: "search-result", id: meta.id, message: result.message || "" }, attrs: { href } },
      h("span", { className: "search-result-title" }, highlighted(conversationTitle(meta), words)),
      result.snippet ? h("span", { className: "search-result-snippet" }, highlighted(result.snippet, words)) : null,
      meta.archived ? h("span", { className: "search-result-note", text: "Archived" }) : null,
    ),
  );
}

export class SearchPanel {
  /** onFilter(): the titles follow the box; onSearch(query): search the messages; onOpen(id, {message}). */
  constructor({ form, input, results, resultsList, resultsLabel, resultsClose, urlFor, onFilter, onSearch, onOpen }) {
    Object.assign(this, { form, input, results, resultsList, resultsLabel, resultsClose, urlFor, onFilter, onSearch, onOpen });
    this.lastQuery = null;
    this.timer = null;
    input.addEventListener("input", () => this.onInput());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && input.value) {
        event.preventDefault();
        this.clear();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.searchNow();
    });
    resultsClose.addEventListener("click", () => this.clear());
    resultsList.addEventListener("click", (event) => {
      const link = event.target.closest("a.search-result");
      if (link && isPlainClick(event) && this.onOpen(link.dataset.id, { message: link.dataset.message || null }) !== false) event.preventDefault();
    });
  }

  get query() {
    return this.input.value.trim();
  }

  onInput() {
    this.onFilter();
    clearTimeout(this.timer);
    if (!this.query) {
      this.hide();
      return;
    }
    if (this.query.length >= MIN_QUERY_CHARS) this.timer = setTimeout(() => this.searchNow(), SEARCH_PAUSE_MS);
  }

  searchNow() {
    clearTimeout(this.timer);
    const query = this.query;
    if (!query) {
      this.clear();
      return;
    }
    if (query === this.lastQuery && !this.results.hidden) return; // already shown
    this.lastQuery = query;
    this.onSearch(query);
  }

  show(query, results) {
    this.resultsLabel.textContent = `Results for “${query}”`;
    const words = queryWords(query);
    const fragment = document.createDocumentFragment();
    for (const result of results) {
      if (!result || !result.conversation) continue;
      fragment.append(buildSearchResult(result, this.urlFor(result.conversation.id), words));
    }
    if (!fragment.childNodes.length) fragment.append(h("li", { className: "search-empty", text: "No conversation matches." }));
    this.resultsList.replaceChildren(fragment);
    this.results.hidden = false;
  }

  /** A conversation was deleted: its result goes. */
  forget(id) {
    for (const link of this.resultsList.querySelectorAll("a.search-result")) {
      if (link.dataset.id === id) link.closest("li").remove();
    }
  }

  hide() {
    clearTimeout(this.timer);
    this.results.hidden = true;
    this.resultsList.replaceChildren();
    this.lastQuery = null;
  }

  clear() {
    this.input.value = "";
    this.hide();
    this.onFilter();
    this.input.focus();
  }
}
