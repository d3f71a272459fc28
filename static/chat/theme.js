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

  var STORAGE_KEY = "chat-theme";
  var root = document.documentElement;
  var darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function storedTheme() {
    try {
      var value = window.localStorage.getItem(STORAGE_KEY);
      return value === "light" || value === "dark" ? value : null;
    } catch (e) {
      return null; // storage disabled: follow the system
    }
  }

  function rememberTheme(theme) {
    try {
      window.localStorage.setItem(STORAGE_KEY, theme);
    } catch (e) {
      /* not remembered, still applied */
    }
  }

  function preferredTheme() {
    return storedTheme() || (darkQuery && darkQuery.matches ? "dark" : "light");
  }

  function labelToggleButtons(theme) {
    var next = theme === "dark" ? "light" : "dark";
    var buttons = document.querySelectorAll("[data-theme-toggle]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute("aria-label", "Switch to " + next + " theme");
      buttons[i].setAttribute("title", "Switch to " + next + " theme");
      buttons[i].setAttribute("data-theme", theme);
    }
  }

  function applyTheme(theme) {
    root.setAttribute("data-bs-theme", theme);
    labelToggleButtons(theme);
  }

  function toggleTheme() {
    var next = root.getAttribute("data-bs-theme") === "dark" ? "light" : "dark";
    rememberTheme(next);
    applyTheme(next);
  }

  applyTheme(preferredTheme());

  if (darkQuery) {
    var followSystem = function () {
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
    var button = event.target && event.target.closest ? event.target.closest("[data-theme-toggle]") : null;
    if (!button) return;
    event.preventDefault();
    toggleTheme();
  });

  document.addEventListener("DOMContentLoaded", function () {
    labelToggleButtons(root.getAttribute("data-bs-theme"));
  });
})();
