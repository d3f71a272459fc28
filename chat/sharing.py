"""Share links: a read-only snapshot of a conversation's active branch at /s/<token>/.

The token is 256 random bits (`secrets.token_urlsafe(32)`), shown once, in the URL
returned to the owner; the database keeps only its SHA-256 in
`Conversation.share_token_hash`, so neither the conversation id nor a database dump
gives the link away. The snapshot (`SharedSnapshot`: title and messages) is taken
when sharing, so later messages, edits and renames stay private until the owner
shares again, which replaces the snapshot and the token (the old link dies).
Unsharing deletes both; the page reads the database on every request, so a
withdrawn link answers 404 at once.

Blocking: callers run these in a thread.
"""
from __future__ import annotations

import re
import secrets

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from chat import conversations
from chat.models import Conversation, SharedSnapshot, hash_token
from chat.presenters import message_html
from chat.transcript import Message

TOKEN_BYTES = 32  # 256 bits of randomness; the URL form is 43 characters
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,128}")


def share_path(token: str) -> str:
    """The link as a path-absolute URL (`/s/<token>/`): the client resolves it against its server."""
    return reverse("chat:shared", args=[token])


def _snapshot_messages(messages: list[Message]) -> list[dict]:
    return [
        {"role": m.role, "content": m.content, "created_at": m.created_at, "model": m.model, "status": m.status}
        for m in messages
        if m.role == "user" or m.content  # an empty reply (failed before its first word) shows nothing
    ]


def share(user, conversation_id: str) -> tuple[Conversation, str]:
    """Publish the active branch under a new token; returns the row and the link's path."""
    row = conversations.get_row(user, conversation_id)
    transcript = conversations.load_transcript(row)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with transaction.atomic():
        # Serialise with a concurrent share/unshare of the same conversation (PostgreSQL;
        # SQLite's write transactions are serial anyway).
        Conversation.objects.select_for_update().filter(pk=row.pk).first()
        SharedSnapshot.objects.update_or_create(
            conversation=row,
            defaults={"title": transcript.title, "messages": _snapshot_messages(transcript.active_branch()),
                      "created_at": timezone.now()},
        )
        Conversation.objects.filter(pk=row.pk).update(share_token_hash=hash_token(token))
    row.share_token_hash = hash_token(token)
    return row, share_path(token)


def unshare(user, conversation_id: str) -> Conversation:
    """Withdraw the link (if any): the snapshot and the hash are gone when this returns."""
    row = conversations.get_row(user, conversation_id)
    with transaction.atomic():
        Conversation.objects.select_for_update().filter(pk=row.pk).first()
        SharedSnapshot.objects.filter(conversation=row).delete()
        Conversation.objects.filter(pk=row.pk).update(share_token_hash=None)
    row.share_token_hash = None
    return row


def find(token: str) -> SharedSnapshot | None:
    """The snapshot a token opens, or None (malformed, withdrawn, replaced or never issued)."""
    if not _TOKEN_RE.fullmatch(token):
        return None
    return SharedSnapshot.objects.filter(conversation__share_token_hash=hash_token(token)).first()


def page_messages(snapshot: SharedSnapshot) -> list[dict]:
    """The snapshot's messages for the template: `content` (text, for the template to
    escape) and `html` (sanitized: replies rendered by chat/rendering.py, user text escaped)."""
    shown = []
    for item in snapshot.messages:
        message = Message(id="", parent=None, role=item["role"], content=item["content"],
                          created_at=item.get("created_at") or "", model=item.get("model"), status=item.get("status"))
        shown.append({"role": message.role, "content": message.content, "html": message_html(message),
                      "model": message.model, "status": message.status})
    return shown
