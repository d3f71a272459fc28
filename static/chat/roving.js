// One Tab stop per list ("roving tabindex"): in the sidebar's conversations and in the
// message list's action buttons, only one control is in the Tab order (the last one
// used, else a sensible default); the arrow keys, Home and End move inside the list.
// So the composer is a few Tab stops from the top of the page however many
// conversations and messages there are.

function usable(el) {
  return !el.disabled && !el.closest("[hidden]") && el.getClientRects().length > 0;
}

export class RovingGroup {
  /**
   * root: the list. selector: its controls, in order. defaultStop(controls): the one in
   * the Tab order before any was used. step(control, key, controls): the control an
   * arrow key moves to (default: previous/next in order), or null.
   */
  constructor(root, { selector, defaultStop = (controls) => controls[0], step = null }) {
    Object.assign(this, { root, selector, defaultStop, step });
    this.current = null;
    root.addEventListener("keydown", (event) => this.onKeydown(event));
    root.addEventListener("focusin", (event) => {
      if (event.target.matches(selector)) {
        this.current = event.target;
        this.sync();
      }
    });
  }

  controls() {
    return Array.from(this.root.querySelectorAll(this.selector)).filter(usable);
  }

  /** Puts exactly one control in the Tab order; call after the list was redrawn. */
  sync() {
    const controls = this.controls();
    const stop = controls.includes(this.current) ? this.current : this.defaultStop(controls) || controls[0] || null;
    for (const el of this.root.querySelectorAll(this.selector)) el.tabIndex = el === stop ? 0 : -1;
  }

  onKeydown(event) {
    const from = event.target;
    if (!from.matches || !from.matches(this.selector) || event.altKey || event.ctrlKey || event.metaKey) return;
    const controls = this.controls();
    const index = controls.indexOf(from);
    if (index < 0) return;
    let to = null;
    if (event.key === "Home") to = controls[0];
    else if (event.key === "End") to = controls[controls.length - 1];
    else if (this.step) to = this.step(from, event.key, controls);
    else if (event.key === "ArrowDown" || event.key === "ArrowRight") to = controls[index + 1];
    else if (event.key === "ArrowUp" || event.key === "ArrowLeft") to = controls[index - 1];
    if (!to) return;
    event.preventDefault();
    to.focus();
  }
}

/** The sidebar: Up/Down between conversations, Right to a conversation's "…" button, Left back. */
export function conversationListRoving(list) {
  return new RovingGroup(list, {
    selector: '.conversation-link, [data-action="menu"]',
    defaultStop: (controls) => controls.find((el) => el.getAttribute("aria-current") === "page") || controls[0],
    step: (from, key, controls) => {
      const item = from.closest('[data-testid="conversation-item"]');
      const links = controls.filter((el) => el.classList.contains("conversation-link"));
      const link = item.querySelector(".conversation-link");
      if (key === "ArrowRight") return from === link ? item.querySelector('[data-action="menu"]') : null;
      if (key === "ArrowLeft") return from === link ? null : link;
      if (key !== "ArrowDown" && key !== "ArrowUp") return null;
      return links[links.indexOf(link) + (key === "ArrowDown" ? 1 : -1)] || null;
    },
  });
}

/** The messages' action buttons (copy, edit, versions, regenerate): the last message's first one by default. */
export function messageActionsRoving(list) {
  return new RovingGroup(list, {
    selector: ".message-footer button",
    defaultStop: (controls) => {
      const footers = list.querySelectorAll(".message-footer");
      const last = footers[footers.length - 1];
      return controls.find((el) => last && last.contains(el)) || controls[controls.length - 1];
    },
  });
}
