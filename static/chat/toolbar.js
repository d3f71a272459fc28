// The open conversation's header and navbar controls: its title (also the page's),
// the model picker, the system prompt, the download links and sharing. Everything here
// follows the open conversation in the state; render() brings it up to date.
//
// Frames handled: conversation.shared (also the answer to the sidebar's "Copy link":
//                 conversation.share_link, copied to the clipboard).
// Requests sent:  conversation.configure, conversation.share, conversation.unshare.

import { APP_NAME, conversationUrl } from "./boot.js";
import { conversationTitle, copyText, flashButton, h } from "./render.js";

const $ = (id) => document.getElementById(id);
const EXPORT_LINKS = [["export-md", "export.md"], ["export-json", "export.json"]];

// An unavailable model says so, without the server's reason: that is written for the
// operator (which setting is missing), not for the person choosing a model.
function modelLabel(model) {
  const label = model.label || model.id;
  return model.available === false ? `${label} — unavailable` : label;
}

export class Toolbar {
  constructor({ state, connection, alerts }) {
    this.state = state;
    this.connection = connection;
    this.alerts = alerts;
    this.modelPicker = $("model-picker");
    this.promptField = $("system-prompt");
    this.shareLink = $("share-link");

    connection.on("conversation.shared", (frame) => this.onConversationShared(frame));
    connection.onRequestError("conversation.configure", (frame, request) => this.onConfigureFailed(request));
    this.modelPicker.addEventListener("change", () => this.onModelPicked());
    $("system-prompt-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveSystemPrompt();
    });
    $("share-button").addEventListener("click", () => this.requestForOpenConversation("conversation.share"));
    $("unshare-button").addEventListener("click", () => this.requestForOpenConversation("conversation.unshare"));
    $("share-copy").addEventListener("click", (event) => {
      const button = event.currentTarget;
      copyText(this.shareLink.value).then((ok) => flashButton(button, ok));
    });
  }

  /** The model picked for the next message. */
  get model() {
    return this.modelPicker.value || this.state.selectedModel;
  }

  /** The open conversation's metadata that the server rendered into the page. */
  readRenderedMeta() {
    const main = $("main");
    const meta = {};
    if (main.dataset.model) meta.model = main.dataset.model;
    if (main.dataset.shared) meta.shared = main.dataset.shared === "true";
    meta.system_prompt = this.promptField.value;
    return meta;
  }

  applyLimits(limits) {
    const max = Number(limits.max_system_prompt_chars);
    if (max > 0) this.promptField.maxLength = max;
  }

  // --- Rendering -------------------------------------------------------------------

  /** Everything in the navbar and the page that depends on the open conversation. */
  render() {
    const { state } = this;
    const meta = state.conversation;
    const open = Boolean(state.conversationId);
    const title = open ? conversationTitle(meta) : "New chat";
    document.title = `${title} — ${APP_NAME}`;
    $("conversation-heading").textContent = title;

    if (open && meta && meta.model) this.selectModel(meta.model);
    else if (!open) this.selectModel(state.selectedModel);

    if (document.activeElement !== this.promptField && state.savingSystemPrompt === null) {
      this.promptField.value = (meta && meta.system_prompt) || "";
    }
    for (const node of document.querySelectorAll("[data-needs-conversation]")) {
      if ("disabled" in node && node.tagName !== "A") node.disabled = !open;
    }
    $("settings-new-chat-note").hidden = open;

    for (const [linkId, suffix] of EXPORT_LINKS) {
      const link = $(linkId);
      if (open) {
        link.href = conversationUrl(state.conversationId) + suffix;
        link.classList.remove("disabled");
        link.removeAttribute("aria-disabled");
        link.removeAttribute("tabindex");
      } else {
        link.removeAttribute("href");
        link.classList.add("disabled");
        link.setAttribute("aria-disabled", "true");
        link.setAttribute("tabindex", "-1");
      }
    }
    this.renderShare();
  }

  renderShare() {
    const { state } = this;
    const meta = state.conversation || {};
    const open = Boolean(state.conversationId);
    const url = state.shareUrl || (typeof meta.shared === "string" ? meta.shared : null) || meta.share_url || null;
    const shared = open && Boolean(url || meta.shared);
    const status = $("share-status");
    if (!open) status.textContent = "A new chat can be shared once it has a first message.";
    else if (url) status.textContent = "Anyone with this link can read a copy of the conversation as it is now (its current branch).";
    else if (shared) status.textContent = "This conversation is shared. Its link is shown only once: a new link replaces the old one.";
    else status.textContent = "Not shared. Sharing publishes a read-only copy of the current branch.";
    $("share-link-group").hidden = !url;
    this.shareLink.value = url ? new URL(url, window.location.origin).href : "";
    const shareButton = $("share-button");
    shareButton.hidden = Boolean(url);
    shareButton.textContent = shared ? "Create a new link" : "Create link";
    $("unshare-button").hidden = !shared;
  }

  // --- Model picker --------------------------------------------------------------------

  /** The models offered by the server (hello); without any, what the server rendered stays. */
  renderModelPicker() {
    const { state, modelPicker } = this;
    if (!state.models.length) return;
    const wanted = (state.conversation && state.conversation.model) || (state.conversationId ? modelPicker.value : state.selectedModel);
    const options = state.models.map((model) =>
      h("option", {
        text: modelLabel(model),
        attrs: { value: model.id, title: model.available === false ? "Not available right now" : null },
        dataset: { label: model.label || model.id },
        disabled: model.available === false,
      }),
    );
    modelPicker.replaceChildren(...options);
    this.selectModel(wanted);
    if (!state.conversationId) state.selectModelForNewChat(modelPicker.value || state.selectedModel);
  }

  /** Selects a model in the picker; one that is no longer offered is shown, disabled. */
  selectModel(id) {
    const { modelPicker } = this;
    const options = Array.from(modelPicker.options);
    if (id && !options.some((o) => o.value === id)) {
      modelPicker.append(h("option", { text: `${id} — not offered any more`, attrs: { value: id }, disabled: true }));
    }
    if (id) {
      modelPicker.value = id;
      if (!this.state.conversationId && modelPicker.selectedOptions[0] && modelPicker.selectedOptions[0].disabled) id = null;
    }
    if (!id) {
      const firstAvailable = Array.from(modelPicker.options).find((o) => !o.disabled);
      if (firstAvailable) modelPicker.value = firstAvailable.value;
    }
  }

  onModelPicked() {
    const { state } = this;
    const model = this.modelPicker.value;
    if (!state.conversationId) {
      state.selectModelForNewChat(model);
      return;
    }
    if (state.conversation && state.conversation.model === model) return;
    const conversation = state.conversationId;
    this.connection.send("conversation.configure", { conversation, model }, { conversation });
  }

  // --- System prompt ---------------------------------------------------------------------

  saveSystemPrompt() {
    const { state } = this;
    const conversation = state.conversationId;
    if (!conversation) return;
    const value = this.promptField.value;
    const limit = Number(state.limits.max_system_prompt_chars) || 0;
    if (limit && value.length > limit) {
      this.setSystemPromptStatus(`Too long: at most ${limit.toLocaleString()} characters.`, "danger");
      return;
    }
    const ref = this.connection.send(
      "conversation.configure",
      { conversation, system_prompt: value },
      { conversation, systemPrompt: value },
    );
    if (ref) {
      state.setSavingSystemPrompt(value);
      this.setSystemPromptStatus("Saving…", "secondary");
    }
  }

  /** conversation.updated of the open conversation: a system prompt being saved is now saved. */
  confirmSaved(meta) {
    const saving = this.state.savingSystemPrompt;
    if (saving !== null && (meta.system_prompt || "") === saving) {
      this.state.setSavingSystemPrompt(null);
      this.setSystemPromptStatus("Saved.", "success");
    }
  }

  onConfigureFailed(request) {
    if (request.systemPrompt !== undefined) {
      this.state.setSavingSystemPrompt(null);
      this.setSystemPromptStatus("Not saved.", "danger");
    }
    this.render();
  }

  setSystemPromptStatus(text, tone) {
    const node = $("system-prompt-status");
    node.textContent = text;
    node.className = `small text-${tone}${tone === "secondary" ? "" : "-emphasis"}`;
  }

  // --- Sharing ------------------------------------------------------------------------------

  requestForOpenConversation(type) {
    const conversation = this.state.conversationId;
    if (conversation) this.connection.send(type, { conversation }, { conversation });
  }

  onConversationShared(frame) {
    const request = this.state.takeRequest(frame.ref);
    if (request && request.copyLink) {
      this.copyLink(frame);
      return;
    }
    if (frame.conversation !== this.state.conversationId) return;
    this.state.setShareUrl(frame.url);
    this.renderShare();
    if (frame.url) {
      this.shareLink.focus();
      this.shareLink.select();
    }
  }

  /** The link asked for by the sidebar's "Copy link": to the clipboard, and shown in an alert (to copy by hand if that failed). */
  copyLink(frame) {
    if (!frame.url) return;
    const url = new URL(frame.url, window.location.origin).href;
    if (frame.conversation === this.state.conversationId) {
      this.state.setShareUrl(frame.url);
      this.renderShare();
    }
    copyText(url).then((ok) => {
      const text = ok ? "Link copied." : "Copy this link:";
      this.alerts.show({ code: "share-link", text, detail: url, variant: ok ? "success" : "warning" });
    });
  }
}
