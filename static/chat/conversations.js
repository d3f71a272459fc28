// The user's conversations, as the sidebar shows them: the frames that change the
// list, renaming, pinning, archiving, deleting (with a few seconds to undo it), copying
// a share link again and full-text search. The
// sidebar (sidebar.js) draws the list; the open conversation (conversation.js) is told
// when the list's changes concern it.
//
// Frames handled: conversation.created, conversation.updated, conversation.deleted,
//                 search.results.
// Requests sent:  conversation.rename, conversation.pin, conversation.archive,
//                 conversation.delete, conversation.share_link (its conversation.shared
//                 is toolbar.js's), conversation.search.

import { UndoDelete } from "./undo.js";

export class ConversationList {
  constructor({ state, connection, sidebar, openConversation, undoBar }) {
    Object.assign(this, { state, connection, sidebar, openConversation });
    this.undoDelete = new UndoDelete({
      ...undoBar,
      onHide: (id) => sidebar.setDeleting(id, true),
      onRestore: (id) => sidebar.setDeleting(id, false),
      onCommit: (id) => this.delete(id),
    });

    connection.on("conversation.created", (frame) => this.onConversationCreated(frame));
    connection.on("conversation.updated", (frame) => this.onConversationUpdated(frame));
    connection.on("conversation.deleted", (frame) => this.onConversationDeleted(frame));
    connection.on("search.results", (frame) => this.onSearchResults(frame));
    connection.onRequestError("conversation.rename", (frame, request) => {
      sidebar.revertTitle(request.conversation, request.oldTitle);
    });
    connection.onRequestError("conversation.delete", (frame, request) => {
      state.settleDelete(request.conversation);
      sidebar.setDeleting(request.conversation, false); // still there: shown again
    });
  }

  /** The list sent with hello replaces the one shown (and the archived ones, the Archived section). */
  setConversations(conversations, archived) {
    this.sidebar.setConversations(Array.isArray(conversations) ? conversations : [], Array.isArray(archived) ? archived : []);
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
    this.undoDelete.forget(id);
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

  /** Pins (or unpins) a conversation; every tab hears conversation.updated. */
  pin(id, pinned) {
    this.connection.send("conversation.pin", { conversation: id, pinned }, { conversation: id });
  }

  /** Archives (or brings back) a conversation; every tab hears conversation.updated. */
  archive(id, archived) {
    this.connection.send("conversation.archive", { conversation: id, archived }, { conversation: id });
  }

  /** Asks for the link of a shared conversation again, to copy it (toolbar.js copies the answer). */
  copyLink(id) {
    this.connection.send("conversation.share_link", { conversation: id }, { conversation: id, copyLink: true });
  }

  search(query) {
    this.state.setLastSearchRef(this.connection.send("conversation.search", { query }));
  }

  /** Deletes after a few seconds in which Undo brings the conversation back (undo.js). */
  deleteWithUndo(id, title) {
    this.undoDelete.schedule(id, title);
  }

  delete(id) {
    if (this.connection.send("conversation.delete", { conversation: id }, { conversation: id })) this.state.markDeleting(id);
  }
}
