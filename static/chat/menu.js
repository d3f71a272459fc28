// Menus: a button marked data-menu-toggle opens the element named by its aria-controls
// (hidden until then) and says so with aria-expanded. A menu closes on Escape (the
// focus goes back to its button), on a click outside it, on opening another menu and,
// unless it is marked data-menu-keep-open (a panel of settings), on a click on one of
// its items. Arrow keys move between the items of a menu.

const FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]), textarea:not([disabled]), select:not([disabled])";

function menuOf(toggle) {
  return document.getElementById(toggle.getAttribute("aria-controls"));
}

function isOpen(toggle) {
  return toggle.getAttribute("aria-expanded") === "true";
}

export function closeMenu(toggle, { focusToggle = false } = {}) {
  if (!isOpen(toggle)) return;
  toggle.setAttribute("aria-expanded", "false");
  menuOf(toggle).hidden = true;
  if (focusToggle) toggle.focus();
}

function openMenu(toggle, toggles) {
  for (const other of toggles) if (other !== toggle) closeMenu(other);
  toggle.setAttribute("aria-expanded", "true");
  menuOf(toggle).hidden = false;
}

function moveFocus(menu, step) {
  const items = [...menu.querySelectorAll(FOCUSABLE)];
  if (!items.length) return;
  const index = items.indexOf(document.activeElement);
  const next = index < 0 ? (step > 0 ? 0 : items.length - 1) : (index + step + items.length) % items.length;
  items[next].focus();
}

/** Wires every [data-menu-toggle] of the page. */
export function setupMenus(root = document) {
  const toggles = [...root.querySelectorAll("[data-menu-toggle]")];
  for (const toggle of toggles) {
    const menu = menuOf(toggle);
    toggle.addEventListener("click", () => (isOpen(toggle) ? closeMenu(toggle) : openMenu(toggle, toggles)));
    toggle.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowDown" || menu.hasAttribute("data-menu-keep-open")) return;
      event.preventDefault();
      openMenu(toggle, toggles);
      moveFocus(menu, 1);
    });
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeMenu(toggle, { focusToggle: true });
      } else if ((event.key === "ArrowDown" || event.key === "ArrowUp") && !menu.hasAttribute("data-menu-keep-open")) {
        event.preventDefault();
        moveFocus(menu, event.key === "ArrowDown" ? 1 : -1);
      }
    });
    if (!menu.hasAttribute("data-menu-keep-open")) {
      menu.addEventListener("click", (event) => {
        if (event.target.closest(".menu-item")) closeMenu(toggle);
      });
    }
    toggle.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && isOpen(toggle)) {
        event.preventDefault();
        closeMenu(toggle);
      }
    });
  }
  document.addEventListener("click", (event) => {
    for (const toggle of toggles) {
      if (isOpen(toggle) && !toggle.contains(event.target) && !menuOf(toggle).contains(event.target)) closeMenu(toggle);
    }
  });
}
