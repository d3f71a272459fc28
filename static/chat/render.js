// DOM building. No state lives here: the page's components (pane, sidebar, toolbar...) call these functions.
//
// The one rule: HTML that comes from the server in a frame (`message.html`,
// `reply.delta.html.append` / `.tail`, `generating.html`) is already sanitized by the
// server and is inserted as HTML. Every other string (titles, user text, snippets,
// model names, error messages) is inserted as text, never as HTML.

import { startCountdown } from "./countdown.js";

/**
 * Creates an element. props: className, text (textContent), dataset, attrs
 * (setAttribute; a value of true sets an empty attribute, false/null/undefined skips),
 * hidden, type, disabled. Children may be nodes or strings (added as text).
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  if (props.dataset) {
    for (const [key, value] of Object.entries(props.dataset)) {
      if (value !== undefined && value !== null) node.dataset[key] = String(value);
    }
  }
  if (props.attrs) {
    for (const [name, value] of Object.entries(props.attrs)) {
      if (value === true) node.setAttribute(name, "");
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
  }
  if (props.type) node.type = props.type;
  if (props.hidden) node.hidden = true;
  if (props.disabled) node.disabled = true;
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Older icon names (of the icon font the page used to load) still asked for by some callers.
const ICON_ALIASES = { clipboard: "copy", check2: "check", "arrow-repeat": "refresh", trash3: "trash", "stop-fill": "stop", "x-lg": "x" };
const SVG = "http://www.w3.org/2000/svg";

function iconHref(name) {
  return `${document.documentElement.dataset.icons || "/static/chat/icons.svg"}#${ICON_ALIASES[name] || name}`;
}

/** An icon of static/chat/icons.svg, hidden from screen readers (its button has the name). */
export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", iconHref(name));
  svg.append(use);
  return svg;
}

function setIcon(svg, name) {
  svg.querySelector("use").setAttribute("href", iconHref(name));
}

/** A small button showing an icon (and optionally text); label is its accessible name. */
export function iconButton({ iconName, label, action, testid, text, className = "", disabled = false, dataset = {} }) {
  return h(
    "button",
    {
      type: "button",
      className: `btn btn-sm btn-icon ${className}`.trim(),
      dataset: { action, testid, ...dataset },
      attrs: { "aria-label": label, title: label },
      disabled,
    },
    iconName ? icon(iconName) : null,
    text ? h("span", { className: "btn-icon-text", text }) : null,
  );
}

/** The name people see for a model id (the server's label, on the model picker's options), else the id. */
export function modelLabelFor(id) {
  const option = Array.from(document.querySelectorAll("#model-picker option")).find((node) => node.value === id);
  return (option && option.dataset.label) || id;
}

// --- Messages ----------------------------------------------------------------

const STATUS_LABELS = {
  cut: "Cut off at the length limit",
  stopped: "Stopped",
  interrupted: "Interrupted",
  failed: "Failed",
};

/**
 * The element of one message of the active branch.
 * msg: {id, parent, role, content, html, model, status, siblings, error?}
 * opts: {isLast, locked (busy or offline: actions disabled), pending, generating,
 *        error ({text, detail}) for a failed reply}
 */
export function buildMessage(msg, opts = {}) {
  const role = msg.role === "user" ? "user" : "assistant";
  const classes = ["message", `message-${role}`];
  if (opts.pending) classes.push("is-pending");
  if (opts.generating) classes.push("is-generating");
  if (msg.status) classes.push(`status-${msg.status}`);

  const article = h("article", {
    className: classes.join(" "),
    dataset: {
      testid: "message",
      id: msg.id,
      role,
      parent: msg.parent || "",
      status: opts.generating ? "generating" : opts.pending ? "pending" : msg.status || "",
      model: msg.model || "",
      siblings: (msg.siblings || []).join(" "),
    },
  });
  article.append(h("h2", { className: "visually-hidden", text: role === "user" ? "You said:" : "The assistant said:" }));

  const bubble = h("div", { className: "message-bubble" });
  if (opts.generating) {
    bubble.append(buildStreamingBody()); // its "still writing" dot is chat.css's; Stop is the composer's
  } else {
    bubble.append(buildBody(msg));
    if (msg.status === "failed" && opts.error) bubble.append(buildMessageError(opts.error));
  }
  article.append(bubble, buildFooter(msg, opts));
  return article;
}

function buildBody(msg) {
  if (msg.role === "user") {
    return h("div", { className: "message-body message-text", dataset: { testid: "message-body" }, text: msg.content || "" });
  }
  const body = h("div", { className: "message-body markdown-body", dataset: { testid: "message-body" } });
  if (msg.html) {
    body.innerHTML = msg.html; // sanitized by the server
    enhanceRenderedHtml(body);
  } else if (msg.content) {
    body.classList.add("message-text");
    body.textContent = msg.content;
  }
  return body;
}

/** The body of a reply being written: finished blocks, then the unfinished tail. */
function buildStreamingBody() {
  const body = h("div", {
    className: "message-body markdown-body",
    dataset: { testid: "message-body" },
    attrs: { "aria-live": "polite", "aria-busy": "true" },
  });
  body.append(h("div", { className: "md-done" }), h("div", { className: "md-tail" }));
  return body;
}

export function buildMessageError(error) {
  const text = h("span", { text: error.text });
  if (error.until) startCountdown(text, error.until);
  return h(
    "div",
    { className: "alert alert-danger message-error", dataset: { testid: "message-error" }, attrs: { role: "status" } },
    text,
    error.detail ? h("span", { className: "small message-error-detail", text: error.detail }) : null,
  );
}

/** The row under a message: versions, status, model, actions. Rebuilt on its own when only the actions change. */
export function buildFooter(msg, opts) {
  const footer = h("div", { className: "message-footer" });
  const role = msg.role === "user" ? "user" : "assistant";

  if (opts.pending) {
    footer.append(h("span", { className: "message-note", text: "Sending…" }));
    return footer;
  }

  const siblings = msg.siblings || [];
  if (siblings.length > 1) footer.append(buildBranchNav(msg.id, siblings, opts.locked));

  if (!opts.generating && STATUS_LABELS[msg.status]) {
    footer.append(h("span", { className: `badge message-status status-badge-${msg.status}`, dataset: { testid: "message-status" }, text: STATUS_LABELS[msg.status] }));
  }
  if (role === "assistant" && msg.model) {
    const label = modelLabelFor(msg.model);
    footer.append(h("span", { className: "message-model", text: label, attrs: { title: `Model: ${label}` } }));
  }

  const actions = h("div", { className: "message-actions" });
  if (role === "user") {
    actions.append(iconButton({ iconName: "copy", label: "Copy message", action: "copy-message", testid: "copy-message" }));
    actions.append(iconButton({ iconName: "pencil", label: "Edit message", action: "edit", testid: "edit", disabled: opts.locked }));
  } else if (!opts.generating) {
    actions.append(iconButton({ iconName: "copy", label: "Copy reply", action: "copy-message", testid: "copy-message" }));
  }
  if (opts.isLast && !opts.generating && role === "assistant" && (msg.status === "cut" || msg.status === "interrupted")) {
    // The model carries on in this same message (message.continue).
    actions.append(iconButton({ iconName: "fast-forward", label: "Continue this reply", text: "Continue", action: "continue", testid: "continue", disabled: opts.locked, className: "btn-continue" }));
  }
  if (opts.isLast && !opts.generating) {
    if (role === "assistant" && msg.status === "failed") {
      // A failed reply: the same regenerate action, spelled out as Retry.
      actions.append(iconButton({ iconName: "refresh", label: "Retry: write this reply again", text: "Retry", action: "regenerate", testid: "regenerate", disabled: opts.locked, className: "btn-retry" }));
    } else {
      const label = role === "assistant" ? "Regenerate reply" : "Get a reply";
      actions.append(iconButton({ iconName: "refresh", label, action: "regenerate", testid: "regenerate", disabled: opts.locked }));
    }
  }
  if (actions.childElementCount) footer.append(actions);
  return footer;
}

function buildBranchNav(id, siblings, locked) {
  const index = siblings.indexOf(id);
  const position = index < 0 ? siblings.length : index + 1;
  const prev = index > 0 ? siblings[index - 1] : null;
  const next = index >= 0 && index < siblings.length - 1 ? siblings[index + 1] : null;
  return h(
    "div",
    { className: "branch-nav", attrs: { role: "group", "aria-label": `Version ${position} of ${siblings.length}` } },
    h("button", {
      type: "button",
      className: "btn btn-sm btn-icon",
      text: "‹",
      dataset: { action: "branch", testid: "branch-prev", target: prev || "" },
      attrs: { "aria-label": "Previous version" },
      disabled: locked || !prev,
    }),
    h("span", { className: "branch-counter", dataset: { testid: "branch-counter" }, text: `${position} / ${siblings.length}` }),
    h("button", {
      type: "button",
      className: "btn btn-sm btn-icon",
      text: "›",
      dataset: { action: "branch", testid: "branch-next", target: next || "" },
      attrs: { "aria-label": "Next version" },
      disabled: locked || !next,
    }),
  );
}

/** The inline editor that replaces a user message's bubble. */
export function buildEditor(content) {
  const textarea = h("textarea", {
    className: "form-control message-editor-input",
    dataset: { testid: "edit-input" },
    attrs: { rows: Math.min(12, Math.max(2, content.split("\n").length)), "aria-label": "Edit your message" },
  });
  textarea.value = content;
  return h(
    "form",
    { className: "message-editor", dataset: { testid: "editor" } },
    textarea,
    h(
      "div",
      { className: "message-editor-actions" },
      h("button", { type: "button", className: "btn btn-sm btn-outline-secondary", text: "Cancel", dataset: { action: "edit-cancel", testid: "edit-cancel" } }),
      h("button", { type: "submit", className: "btn btn-sm btn-primary", text: "Save & submit", dataset: { testid: "edit-save" } }),
    ),
  );
}

// --- Rendered HTML: copy buttons on code blocks --------------------------------

/**
 * Finishes server-rendered HTML once a reply is complete: a Copy button on every code
 * block, and links that open in a new tab (so that following one does not leave the chat).
 */
export function enhanceRenderedHtml(root) {
  for (const link of root.querySelectorAll("a[href]")) openInNewTab(link);
  for (const pre of root.querySelectorAll("pre")) {
    let block = pre.closest(".codehilite");
    if (!block || !root.contains(block)) {
      if (pre.parentElement && pre.parentElement.classList.contains("code-block")) {
        block = pre.parentElement;
      } else {
        block = h("div", { className: "code-block" });
        pre.replaceWith(block);
        block.append(pre);
      }
    }
    if (block.querySelector(":scope > .copy-code")) continue;
    block.classList.add("has-copy");
    block.append(iconButton({ iconName: "clipboard", label: "Copy code", action: "copy-code", testid: "copy-code", text: "Copy", className: "copy-code" }));
  }
}

export function openInNewTab(link) {
  link.target = "_blank";
  link.rel = "noopener noreferrer nofollow";
}

/** The text of the code block a copy-code button belongs to. */
export function codeTextFor(button) {
  const block = button.closest(".codehilite, .code-block");
  const pre = block && block.querySelector("pre");
  return pre ? pre.textContent : "";
}

/** Copies text; resolves true on success. Falls back to execCommand outside secure contexts. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* fall through to the old way */
    }
  }
  const helper = h("textarea", { className: "clipboard-helper", attrs: { readonly: true, "aria-hidden": "true", tabindex: "-1" } });
  helper.value = text;
  document.body.append(helper);
  const previousFocus = document.activeElement;
  helper.select();
  let copied;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  helper.remove();
  if (previousFocus && previousFocus.focus) previousFocus.focus();
  return copied;
}

/** Shows "Copied" (or "Copy failed") on a button for a moment. */
export function flashButton(button, ok) {
  const label = button.querySelector(".btn-icon-text");
  const iconNode = button.querySelector(".icon");
  const oldText = label ? label.textContent : null;
  const oldIcon = iconNode ? iconNode.querySelector("use").getAttribute("href") : null;
  button.classList.add(ok ? "is-done" : "is-failed");
  if (label) label.textContent = ok ? "Copied" : "Copy failed";
  if (iconNode) setIcon(iconNode, ok ? "check" : "x");
  button.setAttribute("title", ok ? "Copied" : "Copy failed");
  clearTimeout(button._flashTimer);
  button._flashTimer = setTimeout(() => {
    button.classList.remove("is-done", "is-failed");
    if (label) label.textContent = oldText;
    if (iconNode) iconNode.querySelector("use").setAttribute("href", oldIcon);
    button.setAttribute("title", button.getAttribute("aria-label") || oldText || "");
  }, 1500);
}

// --- Sidebar -----------------------------------------------------------------

export function conversationTitle(meta) {
  const title = meta && typeof meta.title === "string" ? meta.title.trim() : "";
  return title || "New chat";
}

/** One sidebar entry (same markup as templates/chat/_conversation_item.html). */
export function buildConversationItem(meta, { href, active }) {
  const item = h("li", {
    className: `conversation-item${active ? " active" : ""}`,
    dataset: { testid: "conversation-item", id: meta.id, updatedAt: meta.updated_at || "" },
  });
  const link = h(
    "a",
    { className: "conversation-link", attrs: { href, "aria-current": active ? "page" : null } },
    h("span", { className: "conversation-title", text: conversationTitle(meta) }),
    h("span", { className: "conversation-busy", attrs: { "aria-hidden": "true" } }),
  );
  const menuButton = iconButton({ iconName: "dots", label: "Conversation options", action: "menu", testid: "conversation-menu" });
  menuButton.setAttribute("aria-haspopup", "menu");
  menuButton.setAttribute("aria-expanded", "false");
  item.append(link, h("div", { className: "conversation-actions" }, menuButton));
  return item;
}

export function buildRenameForm(currentTitle, maxLength) {
  const input = h("input", {
    className: "form-control form-control-sm rename-input",
    dataset: { testid: "rename-input" },
    attrs: { type: "text", "aria-label": "New title", maxlength: maxLength || null, autocomplete: "off" },
  });
  input.value = currentTitle;
  return h("form", { className: "rename-form" }, input);
}

// --- Alerts ------------------------------------------------------------------

export function buildAlert({ text, detail, code, variant = "danger" }) {
  const closeButton = h("button", { type: "button", className: "btn-close", attrs: { "aria-label": "Dismiss" }, dataset: { action: "dismiss" } }, icon("x"));
  return h(
    "div",
    { className: `alert alert-${variant} alert-dismissible app-alert`, dataset: { code: code || "" } },
    h("span", { className: "app-alert-text", text }),
    detail ? h("span", { className: "small app-alert-detail", text: detail }) : null,
    closeButton,
  );
}
