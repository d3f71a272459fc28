// The composer: a textarea that grows with its text (up to a maximum height, then
// scrolls), Enter to send and Shift+Enter for a new line, a character counter against
// `limits.max_content_chars`, and a send button that is disabled, with the reason
// shown under the box, whenever a message cannot be sent (offline, a reply in
// progress, too fast, too long).
//
// While a reply is being written, Stop takes the send button's place (same size, same
// spot: nothing moves), and Escape anywhere on the page stops too, unless something
// else on the page (a menu, a dialog, the inline editor, the search box) uses it.
//
// The textarea itself stays editable while sending is blocked, so that a draft can be
// written while offline or while a reply is being written. Each conversation (and the
// new chat) keeps its own draft, in this tab's sessionStorage: switching conversations
// and back, or reloading, gives it back; sending it clears it.

const DRAFT_PREFIX = "chat-draft:";
// A touch screen (a phone, a tablet): Enter writes a new line, as in messaging apps, and
// the send button sends (an on-screen keyboard has no easy Shift+Enter).
const TOUCH = "(pointer: coarse)";
const TOUCH_HINT = "Enter for a new line; the send button sends.";

function readDraft(key) {
  try {
    return window.sessionStorage.getItem(DRAFT_PREFIX + key) || "";
  } catch {
    return ""; // storage disabled: no drafts
  }
}

function writeDraft(key, text) {
  try {
    if (text.trim()) window.sessionStorage.setItem(DRAFT_PREFIX + key, text);
    else window.sessionStorage.removeItem(DRAFT_PREFIX + key);
  } catch {
    /* storage disabled or full: the draft stays in the box only */
  }
}

export class Composer {
  constructor({ form, textarea, sendButton, stopButton, hint, counter, onSubmit, onStop }) {
    Object.assign(this, { form, textarea, sendButton, stopButton, hint, counter, onSubmit, onStop });
    this.limit = null;
    this.generating = false;
    this.draftKey = null; // the conversation whose draft is in the box ("new" for a new chat)
    this.blockedReason = null; // from conversation.js: why sending is not possible now
    this.touch = window.matchMedia(TOUCH);
    this.idleHint = this.touch.matches ? TOUCH_HINT : hint.textContent;

    textarea.addEventListener("input", () => this.update());
    textarea.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) return;
      if (this.touch.matches) return; // a new line
      if (event.isComposing || event.keyCode === 229) return; // an input method is composing
      event.preventDefault();
      this.submit();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    stopButton.addEventListener("click", () => this.onStop());
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !this.generating || event.defaultPrevented) return;
      if (event.target.closest && event.target.closest("dialog, .menu, .message-editor, .app-sidebar.is-open")) return;
      event.preventDefault();
      this.onStop();
    });
    this.update();
  }

  /**
   * The open conversation changed: its own draft comes into the box (the one there stays
   * stored under its conversation). carry: the box's text goes along instead (the new
   * chat that just became a conversation).
   */
  switchDraft(conversationId, { carry = false } = {}) {
    const key = conversationId || "new";
    if (key === this.draftKey) return;
    const text = this.value;
    if (carry && this.draftKey) writeDraft(this.draftKey, "");
    this.draftKey = key;
    this.textarea.value = carry ? text : readDraft(key);
    this.update();
  }

  /** A reply is being written (Stop replaces Send); stopping: its stop is on its way. */
  setGenerating(generating, stopping = false) {
    const moveFocus = document.activeElement === (generating ? this.sendButton : this.stopButton);
    this.generating = generating;
    this.sendButton.hidden = generating;
    this.stopButton.hidden = !generating;
    this.stopButton.disabled = stopping;
    this.stopButton.setAttribute("aria-label", stopping ? "Stopping…" : "Stop generating");
    this.stopButton.title = stopping ? "Stopping…" : "Stop (Escape)";
    if (moveFocus) (generating ? this.stopButton : this.textarea).focus();
  }

  get value() {
    return this.textarea.value;
  }

  setLimit(limit) {
    const n = Number(limit);
    this.limit = Number.isFinite(n) && n > 0 ? n : null;
    this.update();
  }

  /** reason: null when sending is possible, else the sentence shown to the user. */
  setBlocked(reason) {
    this.blockedReason = reason || null;
    this.update();
  }

  /** Why the current text cannot be sent, or null. */
  problem() {
    if (this.blockedReason) return this.blockedReason;
    if (this.limit && this.value.length > this.limit) {
      const over = this.value.length - this.limit;
      return `Too long by ${over.toLocaleString()} character${over === 1 ? "" : "s"} (the limit is ${this.limit.toLocaleString()}).`;
    }
    return null;
  }

  submit() {
    const problem = this.problem();
    if (problem) {
      this.flashHint();
      return;
    }
    if (!this.value.trim()) return;
    this.onSubmit(this.value);
  }

  clear() {
    this.textarea.value = "";
    this.update();
  }

  /** Puts back a text that could not be sent, unless the user has typed something else since. */
  restore(text) {
    if (!text || this.value.trim()) return;
    this.textarea.value = text;
    this.update();
  }

  focus() {
    this.textarea.focus();
  }

  /** Replaces the text (a suggestion to start from), ready to edit or send. */
  fill(text) {
    this.textarea.value = text;
    this.update();
    this.textarea.focus();
    this.textarea.setSelectionRange(text.length, text.length);
  }

  update() {
    if (this.draftKey) writeDraft(this.draftKey, this.value);
    this.autoGrow();
    const length = this.value.length;
    if (this.limit) {
      // Only near the limit (from 80% on): below that, a count is noise.
      this.counter.textContent = length > this.limit * 0.8 ? `${length.toLocaleString()} / ${this.limit.toLocaleString()}` : "";
      this.counter.classList.toggle("is-over", length > this.limit);
      this.counter.classList.toggle("is-near", length <= this.limit && length > this.limit * 0.9);
    } else {
      this.counter.textContent = "";
    }
    const problem = this.problem();
    this.sendButton.disabled = Boolean(problem) || !this.value.trim();
    this.hint.textContent = problem || this.idleHint;
    this.hint.classList.toggle("is-problem", Boolean(problem));
    this.form.dataset.state = this.blockedReason ? "blocked" : problem ? "invalid" : "ready";
    this.textarea.setAttribute("aria-invalid", this.limit && length > this.limit ? "true" : "false");
  }

  /** Height follows the text; CSS max-height caps it and the textarea scrolls beyond. */
  autoGrow() {
    const t = this.textarea;
    t.style.height = "auto"; // CSSOM, allowed by the Content-Security-Policy
    t.style.height = `${t.scrollHeight + (t.offsetHeight - t.clientHeight)}px`;
  }

  flashHint() {
    this.hint.classList.remove("is-flash");
    void this.hint.offsetWidth;
    this.hint.classList.add("is-flash");
  }
}
