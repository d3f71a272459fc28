/*
 * Colour theme: light or dark, following prefers-color-scheme until the user picks
 * one with a theme toggle; the pick is remembered in localStorage.
 *
 * Loaded as a plain (blocking) script in <head>, before the stylesheets, so that
 * data-bs-theme is set on <html> before the first paint (no flash of the wrong
 * theme). It also wires every [data-theme-toggle] button on the page, on every page.
 */
(function () {
  "use strict";

  const STORAGE_KEY = "chat-theme";
  const root = document.documentElement;
  const darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function storedTheme() {
    try {
      const value = window.localStorage.getItem(STORAGE_KEY);
      return value === "light" || value === "dark" ? value : null;
    } catch {
      return null; // storage disabled: follow the system
    }
  }

  function rememberTheme(theme) {
    try {
      window.localStorage.setItem(STORAGE_KEY, theme);
    } catch {
      /* not remembered, still applied */
    }
  }

  function preferredTheme() {
    return storedTheme() || (darkQuery && darkQuery.matches ? "dark" : "light");
  }

  function labelToggleButtons(theme) {
    const next = theme === "dark" ? "light" : "dark";
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.setAttribute("aria-label", `Switch to ${next} theme`);
      button.setAttribute("title", `Switch to ${next} theme`);
      button.setAttribute("data-theme", theme);
    }
  }

  function applyTheme(theme) {
    root.setAttribute("data-bs-theme", theme);
    labelToggleButtons(theme);
  }

  function toggleTheme() {
    const next = root.getAttribute("data-bs-theme") === "dark" ? "light" : "dark";
    rememberTheme(next);
    applyTheme(next);
  }

  applyTheme(preferredTheme());

  if (darkQuery) {
    const followSystem = function () {
      if (!storedTheme()) applyTheme(preferredTheme());
    };
    if (darkQuery.addEventListener) darkQuery.addEventListener("change", followSystem);
    else if (darkQuery.addListener) darkQuery.addListener(followSystem);
  }

  // Another tab changed the theme.
  window.addEventListener("storage", function (event) {
    if (event.key === STORAGE_KEY) applyTheme(preferredTheme());
  });

  document.addEventListener("click", function (event) {
    const button = event.target && event.target.closest ? event.target.closest("[data-theme-toggle]") : null;
    if (!button) return;
    event.preventDefault();
    toggleTheme();
  });

  document.addEventListener("DOMContentLoaded", function () {
    labelToggleButtons(root.getAttribute("data-bs-theme"));
  });
})();
