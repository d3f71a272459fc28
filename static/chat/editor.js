// Editing a sent message in place: the editor opens under the message's bubble (one at
// a time), Enter or Save submits, Escape or Cancel closes it and gives the focus back
// to the message's Edit button. Submitting calls onSubmit(messageId, content); the pane
// decides what an edit does.

import { buildEditor } from "./render.js";

export class InlineEditor {
  constructor({ list, onSubmit }) {
    this.list = list;
    this.onSubmit = onSubmit;
    list.addEventListener("submit", (event) => this.onEditorSubmit(event));
    list.addEventListener("keydown", (event) => this.onEditorKeydown(event));
  }

  /** Opens the editor on a message's element, with its text. */
  open(id, article, content) {
    this.cancel();
    const editor = buildEditor(content || "");
    editor.dataset.messageId = id;
    article.classList.add("is-editing");
    article.querySelector(".message-bubble").after(editor);
    const textarea = editor.querySelector("textarea");
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
  }

  cancel() {
    for (const editor of this.list.querySelectorAll(".message-editor")) {
      const article = editor.closest('[data-testid="message"]');
      editor.remove();
      if (article) {
        article.classList.remove("is-editing");
        const button = article.querySelector('[data-action="edit"]');
        if (button) button.focus();
      }
    }
  }

  onEditorSubmit(event) {
    const editor = event.target.closest(".message-editor");
    if (!editor) return;
    event.preventDefault();
    const content = editor.querySelector("textarea").value;
    if (!content.trim()) return;
    this.onSubmit(editor.dataset.messageId, content);
  }

  onEditorKeydown(event) {
    const textarea = event.target.closest(".message-editor textarea");
    if (!textarea) return;
    if (event.key === "Escape") {
      event.preventDefault();
      this.cancel();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      textarea.form.requestSubmit();
    }
  }
}
