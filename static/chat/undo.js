// Delete with Undo: the conversation leaves the sidebar at once, and a bar says so with
// an Undo button for a few seconds. Only when the time is up is the delete sent to the
// server, so nothing is lost until then (and nothing at all if the page is closed
// first). A second delete while one is waiting sends the first one right away.

export const UNDO_SECONDS = 6;

export class UndoDelete {
  constructor({ bar, text, undoButton, onHide, onRestore, onCommit }) {
    Object.assign(this, { bar, text, undoButton, onHide, onRestore, onCommit });
    this.pending = null;
    undoButton.addEventListener("click", () => this.undo());
  }

  /** Hides the conversation now and deletes it in UNDO_SECONDS unless Undo is pressed. */
  schedule(id, title) {
    this.commit();
    this.onHide(id);
    this.pending = { id, timer: window.setTimeout(() => this.commit(), UNDO_SECONDS * 1000) };
    this.text.textContent = `Deleted “${title}”.`;
    this.bar.hidden = false;
  }

  undo() {
    const pending = this.pending;
    if (!pending) return;
    this.pending = null;
    window.clearTimeout(pending.timer);
    this.bar.hidden = true;
    this.onRestore(pending.id);
  }

  /** Sends the waiting delete now (its time is up, or another delete comes). */
  commit() {
    const pending = this.pending;
    if (!pending) return;
    this.pending = null;
    window.clearTimeout(pending.timer);
    if (this.bar.contains(document.activeElement)) document.activeElement.blur();
    this.bar.hidden = true;
    this.onCommit(pending.id);
  }

  /** The conversation was deleted anyway (in another window): nothing to undo any more. */
  forget(id) {
    if (!this.pending || this.pending.id !== id) return;
    window.clearTimeout(this.pending.timer);
    this.pending = null;
    this.bar.hidden = true;
  }
}
