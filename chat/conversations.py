"""The high-level operations on a user's conversations (blocking: DB and store).

The transcript store is the source of truth for messages; the `Conversation` row
is the sidebar's copy of the metadata, written after the store so that a failed
store write never leaves a row pointing at nothing. Every function checks the
owner first, so another user's id is indistinguishable from an absent one.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat import preferences, rows, search
from chat.errors import ChatError, not_found, storage_unavailable
from chat.models import Conversation
from chat.store import ConversationExists, ConversationNotFound, StorageUnavailable, get_store
from chat.transcript import Message, Transcript

T = TypeVar("T")


def list_conversations(user, limit: int | None = None) -> list[Conversation]:
    """The sidebar: the pinned conversations, then the others newest first; archived ones
    are left out (see `list_archived`). Two small queries, no storage call: the pinned are
    few, and the rest walks the (owner, -updated_at) index."""
    listed = Conversation.objects.filter(owner=user, archived=False)
    pinned = list(listed.filter(pinned=True).order_by("-updated_at"))
    rest = list(listed.filter(pinned=False).order_by("-updated_at")[:limit])
    return (pinned + rest)[:limit]


def sidebar_and_archived(user) -> tuple[list[Conversation], list[Conversation]]:
    """`list_conversations(user)` and `list_archived(user)` from one query (the hello frame)."""
    every = rows.filter(Conversation, owner_id=user.pk, order_by=("-updated_at",))  # every handshake: chat/rows.py
    listed = [row for row in every if not row.archived]
    return [row for row in listed if row.pinned] + [row for row in listed if not row.pinned], \
        [row for row in every if row.archived]


def list_archived(user) -> list[Conversation]:
    """The archived conversations, newest first: the Archived section, out of the sidebar's list."""
    return list(Conversation.objects.filter(owner=user, archived=True).order_by("-updated_at"))


def organize(user, conversation_id: str, *, pinned: bool | None = None, archived: bool | None = None) -> Conversation:
    """Pin or archive a conversation (None: unchanged). Sidebar metadata only: the transcript
    and `updated_at` stay as they are, so the conversation keeps its place by time."""
    row = get_row(user, conversation_id)
    fields = {name: value for name, value in (("pinned", pinned), ("archived", archived)) if value is not None}
    if fields:
        Conversation.objects.filter(pk=row.pk).update(**fields)
        for name, value in fields.items():
            setattr(row, name, value)
    return row


def get_latest_conversation(user) -> Conversation | None:
    return Conversation.objects.filter(owner=user).order_by("-updated_at").first()


def get_row(user, conversation_id: str) -> Conversation:
    row = rows.get(Conversation, id=conversation_id, owner_id=user.pk)  # on every turn: see chat/rows.py
    if row is None:
        raise not_found()
    return row


def load_transcript(row: Conversation) -> Transcript:
    try:
        return get_store().load(row.owner_id, row.id)
    except ConversationNotFound:
        raise not_found() from None
    except StorageUnavailable:
        raise storage_unavailable() from None


def get_conversation(user, conversation_id: str) -> tuple[Conversation, Transcript]:
    row = get_row(user, conversation_id)
    return row, load_transcript(row)


def create_conversation(user, model: str, first_message: str, *,
                        before_insert: Callable[[Conversation, Message], None] | None = None,
                        index_later: list[Callable[[], None]] | None = None,
                        ) -> tuple[Conversation, Transcript, Message]:
    """Create a conversation holding its first user message, in one store write.

    `before_insert` may fill the row before it is saved (chat/replies/claim.py: a new
    conversation is created with its first reply's claim, so no request can come between).
    `index_later` is as for `update_transcript`.
    Its system prompt is the user's custom instructions (chat/preferences.py), copied."""
    now = timezone.now()
    row = Conversation(owner=user, model=model, system_prompt=preferences.system_prompt_for(user),
                       created_at=now, updated_at=now)
    transcript = Transcript.new(row.id, user.id, model=model, system_prompt=row.system_prompt)
    message = transcript.add_message(None, "user", first_message)
    try:
        get_store().create(transcript)
    except (StorageUnavailable, ConversationExists):
        raise storage_unavailable() from None
    if before_insert is not None:
        before_insert(row, message)
    row.save(force_insert=True)
    _index(functools.partial(search.index_changes, row.id, user.id, {}, "", transcript), index_later)
    return row, transcript, message


def update_transcript(row: Conversation, mutate: Callable[[Transcript], T], *, touch: bool = True,
                      index_later: list[Callable[[], None]] | None = None) -> tuple[Transcript, T]:
    """Apply `mutate` through the store's conditional-write loop, then mirror metadata and the search index.

    With `index_later`, the search index is not written now: its job is appended there for
    the caller to run (a turn runs it after the reply's first token, which it would delay)."""
    before: dict = {}

    def tracked(transcript: Transcript) -> T:
        # Runs again on every retry of the write: `before` is the state the last attempt changed.
        before.update(contents=search.contents(transcript), title=transcript.title)
        return mutate(transcript)

    try:
        transcript, result = get_store().update(row.owner_id, row.id, tracked)
    except ConversationNotFound:
        raise not_found() from None
    except StorageUnavailable:
        raise storage_unavailable() from None
    _mirror_metadata(row, transcript, touch=touch)
    _index(functools.partial(search.index_changes, row.id, row.owner_id, before["contents"], before["title"],
                             transcript), index_later)
    return transcript, result


def _index(job: Callable[[], None], later: list[Callable[[], None]] | None) -> None:
    """Update the search index now, or leave `job` in `later` for the caller to run."""
    if later is None:
        job()
    else:
        later.append(job)


def _mirror_metadata(row: Conversation, transcript: Transcript, *, touch: bool) -> None:
    """Write what changed of the sidebar's copy: nothing, for most turns (`touch=False`).

    Skipping an unchanged field is safe: `row` was read from the database, and a writer
    that changed the field since wrote its own transcript and mirrored it itself (the
    stale value is exactly what this write would otherwise have put back)."""
    fields = {"title": transcript.title, "model": transcript.model, "system_prompt": transcript.system_prompt}
    fields = {name: value for name, value in fields.items() if getattr(row, name) != value}
    if touch:
        fields["updated_at"] = timezone.now()
    if fields:
        rows.update(Conversation, fields, id=row.pk)  # at the end of every reply: see chat/rows.py
    for name, value in fields.items():
        setattr(row, name, value)


def append_message(row: Conversation, parent: str | None, role: str, content: str, **extra) -> tuple[Transcript, Message]:
    """Store a new message; a reply continued in place (`message_id` already stored under
    `parent`) gets its new text, status and error instead."""
    def add(transcript: Transcript) -> Message:
        if parent is not None and parent not in transcript.messages:
            raise not_found()
        existing = transcript.messages.get(extra.get("message_id") or "")
        if existing is not None and existing.parent == parent and existing.role == role == "assistant":
            existing.content, existing.status, existing.error = content, extra.get("status"), extra.get("error")
            existing.model = extra.get("model") or existing.model
            return existing
        return transcript.add_message(parent, role, content, **extra)

    return update_transcript(row, add)


def update_title(row: Conversation, title: str) -> Transcript:
    def set_title(transcript: Transcript) -> None:
        transcript.title = title

    transcript, _ = update_transcript(row, set_title, touch=False)
    return transcript


def rename(user, conversation_id: str, title: str) -> Conversation:
    title = " ".join(title.split())
    if not title:
        raise ChatError("invalid_message", "A title cannot be empty.")
    if len(title) > settings.CHAT_MAX_TITLE_CHARS:
        raise ChatError("too_large", f"Titles are limited to {settings.CHAT_MAX_TITLE_CHARS} characters.")
    row = get_row(user, conversation_id)
    update_title(row, title)
    return row


def configure(user, conversation_id: str, *, model: str | None = None, system_prompt: str | None = None) -> Conversation:
    if system_prompt is not None and len(system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise ChatError("too_large", f"System prompts are limited to {settings.CHAT_MAX_SYSTEM_PROMPT_CHARS} characters.")
    row = get_row(user, conversation_id)

    def apply(transcript: Transcript) -> None:
        if model is not None:
            transcript.model = model
        if system_prompt is not None:
            transcript.system_prompt = system_prompt

    update_transcript(row, apply, touch=False)
    return row


def delete(user, conversation_id: str) -> None:
    row = get_row(user, conversation_id)
    if row.reply_message:
        raise ChatError("busy", "A reply is still being written in this conversation; stop it first.")
    try:
        get_store().delete(row.owner_id, row.id)
    except StorageUnavailable:
        raise storage_unavailable() from None
    search.remove_conversation(row.id)  # also cascades from the row; explicit, as the index is not the ORM's
    row.delete()


def sync_from_store(stdout_write: Callable[[str], None] = lambda line: None) -> int:
    """Rebuild every Conversation row and its search entries from the store; idempotent. Returns the count."""
    from django.contrib.auth import get_user_model

    users = set(get_user_model().objects.values_list("pk", flat=True))
    store = get_store()
    count = 0
    for user_id, conversation_id in store.iter_ids():
        if user_id not in users:
            stdout_write(f"skipped {conversation_id}: no user {user_id}")
            continue
        transcript = store.load(user_id, conversation_id)
        with transaction.atomic():
            Conversation.objects.update_or_create(
                pk=conversation_id,
                defaults={
                    "owner_id": user_id,
                    "title": transcript.title,
                    "model": transcript.model,
                    "system_prompt": transcript.system_prompt,
                    "created_at": datetime.fromisoformat(transcript.created_at),
                    "updated_at": datetime.fromisoformat(transcript.updated_at),
                },
            )
            search.rebuild(transcript)
        count += 1
    return count
