// The "…" menu of a sidebar entry: rename, pin or unpin, archive, copy the share link (of
// a shared conversation) and delete. It opens under its button on its first item; the
// arrow keys move (Home, End: the first, the last), Escape or Tab closes it (back to the button). Choosing an item calls
// onChoose(action, id); the sidebar does the rest.

import { h, icon } from "./render.js";

const ENTRY = '[data-testid="conversation-item"]';

/** The menu for one conversation; which items it has depends on its metadata. */
export function buildConversationMenu(meta = {}) {
  const item = (action, iconName, text, className = "") => h(
    "button",
    { type: "button", className: `menu-item ${className}`.trim(), dataset: { action, testid: action }, attrs: { role: "menuitem" } },
    icon(iconName),
    text,
  );
  return h(
    "div",
    { className: "menu conversation-menu", attrs: { role: "menu", "aria-label": "Conversation options" } },
    item("rename", "pencil", "Rename"),
    meta.pinned ? item("unpin", "pin", "Unpin") : item("pin", "pin", "Pin"),
    item("archive", "archive", "Archive"),
    meta.shared ? item("copy-link", "link", "Copy link") : null,
    item("delete", "trash", "Delete", "is-danger"),
  );
}

export class ConversationMenu {
  constructor({ list, metaOf, onChoose }) {
    Object.assign(this, { list, metaOf, onChoose });
    this.openMenu = null;
    list.addEventListener("keydown", (event) => this.onKeydown(event));
    document.addEventListener("click", (event) => {
      if (this.openMenu && !this.openMenu.closest(ENTRY).contains(event.target)) this.close();
    });
  }

  /** A click on a "…" button or on a menu item; true when it was one. */
  onClick(event, item) {
    const button = event.target.closest("[data-action]");
    if (!button) return false;
    const action = button.dataset.action;
    if (action === "menu") {
      if (this.openMenu && item.contains(this.openMenu)) this.close({ focusButton: true });
      else this.show(item);
      return true;
    }
    this.close({ focusButton: true });
    this.onChoose(action, item.dataset.id);
    return true;
  }

  show(item) {
    this.close();
    const button = item.querySelector('[data-action="menu"]');
    this.openMenu = buildConversationMenu(this.metaOf(item.dataset.id) || {});
    item.querySelector(".conversation-actions").append(this.openMenu);
    button.setAttribute("aria-expanded", "true");
    this.openMenu.querySelector(".menu-item").focus();
  }

  close({ focusButton = false } = {}) {
    const menu = this.openMenu;
    if (!menu) return;
    this.openMenu = null;
    const button = menu.parentElement.querySelector('[data-action="menu"]');
    const hadFocus = menu.contains(document.activeElement);
    menu.remove();
    button.setAttribute("aria-expanded", "false");
    if ((focusButton || hadFocus) && button.isConnected) button.focus();
  }

  onKeydown(event) {
    const menu = event.target.closest(".conversation-menu");
    if (!menu) return;
    const items = [...menu.querySelectorAll(".menu-item")];
    const index = items.indexOf(document.activeElement);
    if (event.key === "Escape" || event.key === "Tab") {
      if (event.key === "Escape") event.preventDefault();
      this.close({ focusButton: true });
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      items[(index + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
    } else if (event.key === "Home" || event.key === "End") {
      event.preventDefault();
      items[event.key === "Home" ? 0 : items.length - 1].focus();
    }
  }
}
