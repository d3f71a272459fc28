// Keyboard shortcuts of the chat page, the ones people know from other chat apps, and
// the help dialog that lists them (`?`, or Ctrl+/):
//
//   Ctrl/Cmd+Shift+O   new chat
//   Shift+Escape, /    focus the message box (`/` only when not typing in a field)
//   Ctrl/Cmd+Shift+C   copy the last reply
//   ?, Ctrl/Cmd+/      this list
//
// Escape (stop the reply being written) is the composer's.

function isTypingIn(target) {
  return Boolean(target && target.closest && target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']"));
}

export class Shortcuts {
  constructor({ dialog, openButtons, newChat, focusComposer, copyLastReply }) {
    Object.assign(this, { dialog, newChat, focusComposer, copyLastReply });
    for (const button of openButtons) button.addEventListener("click", () => this.showHelp());
    document.addEventListener("keydown", (event) => this.onKeydown(event));
  }

  showHelp() {
    if (!this.dialog.open) this.dialog.showModal();
  }

  onKeydown(event) {
    if (event.defaultPrevented || event.isComposing || this.dialog.open) return;
    if (document.querySelector("dialog[open]")) return; // another dialog has the keyboard
    const mod = event.ctrlKey || event.metaKey;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let action = null;
    if (mod && event.shiftKey && key === "o") action = this.newChat;
    else if (mod && event.shiftKey && key === "c") action = this.copyLastReply;
    else if (mod && !event.shiftKey && key === "/") action = () => this.showHelp();
    else if (event.shiftKey && !mod && key === "Escape") action = this.focusComposer;
    else if (!mod && !event.altKey && !isTypingIn(event.target)) {
      if (key === "?") action = () => this.showHelp();
      else if (key === "/") action = this.focusComposer;
    }
    if (!action) return;
    event.preventDefault();
    action();
  }
}
