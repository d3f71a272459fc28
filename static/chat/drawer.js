// The sidebar as a drawer on narrow screens (below 992px): its toggle slides it over the
// page with a backdrop behind; the backdrop, its close button, Escape and opening a
// conversation close it. While it is open the rest of the page is inert, so the
// keyboard stays inside it; when it closes, the focus goes back to the toggle. On wide
// screens the sidebar is always shown and none of this applies.

const NARROW = "(max-width: 991.98px)";

export class Drawer {
  constructor({ panel, toggle, backdrop, outside }) {
    Object.assign(this, { panel, toggle, backdrop, outside });
    this.narrow = window.matchMedia(NARROW);
    toggle.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    for (const button of document.querySelectorAll("[data-drawer-close]")) {
      button.addEventListener("click", () => this.close());
    }
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.isOpen) {
        event.preventDefault();
        this.close();
      }
    });
    this.narrow.addEventListener("change", () => {
      if (!this.narrow.matches) this.close({ restoreFocus: false });
    });
  }

  get isOpen() {
    return this.panel.classList.contains("is-open");
  }

  open() {
    if (!this.narrow.matches) return;
    this.panel.classList.add("is-open");
    this.backdrop.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    for (const node of this.outside) node.inert = true;
    this.panel.focus();
  }

  /** Closes the drawer (nothing to do when it is not open, or on a wide screen). */
  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    this.panel.classList.remove("is-open");
    this.backdrop.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    for (const node of this.outside) node.inert = false;
    if (restoreFocus && this.panel.contains(document.activeElement)) this.toggle.focus();
  }
}
