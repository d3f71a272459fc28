// The sidebar's Archived section: the archived conversations (out of the list above it),
// newest first, in a <details> that starts collapsed. Each can be opened (its link) or
// brought back to the list (Unarchive: onUnarchive(id)). One Tab stop for the list, the
// arrow keys inside (roving.js), like the conversations above.

import { conversationTitle, h } from "./render.js";
import { RovingGroup } from "./roving.js";

function timeOf(meta) {
  const t = Date.parse(meta && meta.updated_at);
  return Number.isNaN(t) ? Infinity : t;
}

function isPlainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

export class ArchivedSection {
  constructor({ section, list, count, urlFor, onOpen, onUnarchive }) {
    Object.assign(this, { section, list, count, urlFor, onOpen, onUnarchive });
    this.metas = new Map();
    this.roving = new RovingGroup(list, { selector: '.archived-link, [data-action="unarchive"]' });
    section.addEventListener("toggle", () => this.roving.sync());
    list.addEventListener("click", (event) => {
      const item = event.target.closest('[data-testid="archived-item"]');
      if (!item) return;
      if (event.target.closest('[data-action="unarchive"]')) this.onUnarchive(item.dataset.id);
      else if (event.target.closest(".archived-link") && isPlainClick(event) && this.onOpen(item.dataset.id) !== false) event.preventDefault();
    });
  }

  has(id) {
    return this.metas.has(id);
  }

  get(id) {
    return this.metas.get(id) || null;
  }

  /** Replaces the whole section (hello's `archived`). */
  set(metas) {
    this.metas = new Map(metas.filter((meta) => meta && meta.id).map((meta) => [meta.id, meta]));
    this.render();
  }

  upsert(meta) {
    this.metas.set(meta.id, { ...(this.metas.get(meta.id) || {}), ...meta });
    this.render();
  }

  remove(id) {
    if (this.metas.delete(id)) this.render();
  }

  render() {
    const metas = [...this.metas.values()].sort((a, b) => timeOf(b) - timeOf(a));
    this.list.replaceChildren(...metas.map((meta) => this.buildItem(meta)));
    this.count.textContent = `(${metas.length})`;
    this.section.hidden = metas.length === 0;
    this.roving.sync();
  }

  buildItem(meta) {
    const title = conversationTitle(meta);
    return h(
      "li",
      { className: "archived-item", dataset: { testid: "archived-item", id: meta.id } },
      h("a", { className: "archived-link", text: title, attrs: { href: this.urlFor(meta.id) } }),
      h("button", {
        type: "button",
        className: "btn btn-sm btn-outline-secondary",
        text: "Unarchive",
        dataset: { action: "unarchive", testid: "unarchive" },
        attrs: { "aria-label": `Unarchive “${title}”` },
      }),
    );
  }
}
