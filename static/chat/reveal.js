// A search result opens its conversation at the message found: once the pane shows the
// conversation, the message is scrolled to the middle, focused (a screen reader lands on
// it) and marked for a moment. A message on another branch (an edited-away version, an
// older reply) is brought in first with branch.switch, as the "‹ ›" buttons would; if it
// is still not shown then (a reply is being written, it was deleted), the conversation
// simply stays as it is.

const MARK_MS = 2500;

export class MessageReveal {
  constructor({ state, connection, pane }) {
    Object.assign(this, { state, connection, pane });
  }

  /** Remembers the message to show when `conversation` is in the pane. */
  want(conversation, message) {
    if (message) this.state.wantReveal(conversation, message);
    else this.state.clearReveal();
  }

  /** The pane now shows `conversation` (a conversation.state, or it was open already). */
  shown(conversation) {
    const target = this.state.reveal;
    if (!target || target.conversation !== conversation) return;
    const article = this.pane.list.querySelector(`[data-testid="message"][data-id="${CSS.escape(target.message)}"]`);
    if (article) {
      this.state.clearReveal();
      this.mark(article);
    } else if (!target.switched && !this.pane.generating) {
      this.state.markRevealSwitched();
      const sent = this.connection.sendQuietly("branch.switch", { conversation, message: target.message }, { conversation });
      if (sent === null) this.state.clearReveal();
    } else {
      this.state.clearReveal();
    }
  }

  mark(article) {
    this.pane.scroll.reveal(article);
    article.tabIndex = -1;
    article.focus({ preventScroll: true });
    article.classList.add("is-found");
    article.dataset.found = "true";
    setTimeout(() => {
      article.classList.remove("is-found");
      delete article.dataset.found;
    }, MARK_MS);
  }
}
