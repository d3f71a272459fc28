// The user's conversations, as the sidebar shows them: the frames that change the
// list, renaming, deleting (after the confirmation dialog) and full-text search. The
// sidebar (sidebar.js) draws the list; the open conversation (conversation.js) is told
// when the list's changes concern it.
//
// Frames handled: conversation.created, conversation.updated, conversation.deleted,
//                 search.results.
// Requests sent:  conversation.rename, conversation.delete, conversation.search.

export class ConversationList {
  constructor({ state, connection, sidebar, openConversation, deleteModal, deleteModalName, confirmDeleteButton }) {
    Object.assign(this, { state, connection, sidebar, openConversation, deleteModal, deleteModalName, confirmDeleteButton });

    connection.on("conversation.created", (frame) => this.onConversationCreated(frame));
    connection.on("conversation.updated", (frame) => this.onConversationUpdated(frame));
    connection.on("conversation.deleted", (frame) => this.onConversationDeleted(frame));
    connection.on("search.results", (frame) => this.onSearchResults(frame));
    connection.onRequestError("conversation.rename", (frame, request) => {
      sidebar.revertTitle(request.conversation, request.oldTitle);
    });
    connection.onRequestError("conversation.delete", (frame, request) => {
      state.settleDelete(request.conversation);
    });

    // The dialog's form (method="dialog") closes it after this click.
    confirmDeleteButton.addEventListener("click", (event) => {
      const id = event.currentTarget.dataset.id;
      if (id) this.delete(id);
    });
  }

  /** The list sent with hello replaces the one shown. */
  setConversations(conversations) {
    this.sidebar.setConversations(Array.isArray(conversations) ? conversations : []);
    this.sidebar.setActive(this.state.conversationId);
  }

  // --- Frames --------------------------------------------------------------------------

  onConversationCreated(frame) {
    const meta = frame.conversation;
    if (!meta || !meta.id) return;
    this.sidebar.upsert(meta);
    this.openConversation.created(meta, frame.ref);
  }

  onConversationUpdated(frame) {
    const meta = frame.conversation;
    if (!meta || !meta.id) return;
    this.sidebar.upsert(meta);
    this.openConversation.updated(meta);
  }

  onConversationDeleted(frame) {
    const id = typeof frame.conversation === "object" && frame.conversation ? frame.conversation.id : frame.conversation;
    if (!id) return;
    this.sidebar.remove(id);
    const deletedHere = this.state.settleDelete(id);
    this.openConversation.deleted(id, deletedHere);
  }

  onSearchResults(frame) {
    // Only the answer to the latest search, while its results are still wanted.
    const query = this.sidebar.lastQuery;
    if (query === null) return;
    if (frame.ref ? frame.ref !== this.state.lastSearchRef : frame.query !== query) return;
    this.sidebar.showResults(query, Array.isArray(frame.results) ? frame.results : []);
  }

  // --- The sidebar's requests -------------------------------------------------------------

  /** Returns false when the rename could not be sent (the sidebar then keeps the old title). */
  rename(id, title, oldTitle) {
    return this.connection.send("conversation.rename", { conversation: id, title }, { conversation: id, oldTitle }) !== null;
  }

  search(query) {
    this.state.setLastSearchRef(this.connection.send("conversation.search", { query }));
  }

  /** Asks for confirmation in the page's <dialog> (Escape or Cancel keeps the conversation), then deletes. */
  confirmDelete(id, title) {
    this.deleteModalName.textContent = title;
    this.confirmDeleteButton.dataset.id = id;
    this.deleteModal.showModal();
  }

  delete(id) {
    if (this.connection.send("conversation.delete", { conversation: id }, { conversation: id })) this.state.markDeleting(id);
  }
}
