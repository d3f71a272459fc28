"""Share links: a read-only snapshot of a conversation's active branch at /s/<token>/.

The token is an HMAC-SHA256 (SECRET_KEY) of the conversation id and a nonce of 128
random bits stored in `Conversation.share_nonce`; the database keeps only the token's
SHA-256 in `Conversation.share_token_hash`, so neither the conversation id nor a
database dump gives the link away, while the owner can have the same link again
(`current_link`). A link whose token no longer derives (SECRET_KEY changed, or shared
before links were derived) still opens, but cannot be shown again: share anew. The snapshot (`SharedSnapshot`: title and messages) is taken
when sharing, so later messages, edits and renames stay private until the owner
shares again, which replaces the snapshot and the token (the old link dies).
Unsharing deletes both; the page reads the database on every request, so a
withdrawn link answers 404 at once.

Blocking: callers run these in a thread.
"""
from __future__ import annotations

import base64
import re
import secrets

from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from chat import conversations
from chat.backends import available_models
from chat.errors import ChatError
from chat.models import Conversation, SharedSnapshot, hash_token
from chat.presenters import message_html
from chat.transcript import Message

NONCE_BYTES = 16  # a new link per share: the old one dies
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,128}")
_TOKEN_SALT = "chat.sharing.link"
# What a shared copy shows of a reply: finished ones. `stopped` is what its owner chose to
# keep, and is marked so; `failed` and `interrupted` ones were never finished.
SHARED_REPLY_STATUSES = frozenset({"complete", "cut", "stopped", None})


def _token(conversation_id: str, nonce: str) -> str:
    """The link's secret: 256 bits, 43 URL-safe characters, derived and never stored."""
    digest = salted_hmac(_TOKEN_SALT, f"{conversation_id}:{nonce}", algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def share_path(token: str) -> str:
    """The link as a path-absolute URL (`/s/<token>/`): the client resolves it against its server."""
    return reverse("chat:shared", args=[token])


def _snapshot_messages(messages: list[Message], writing: str | None = None) -> list[dict]:
    """The messages a shared copy shows: the user's, and the finished replies with text.

    `writing` is the reply being written (a continued reply is stored while it grows):
    it is left out, like failed and interrupted replies."""
    return [
        {"role": m.role, "content": m.content, "created_at": m.created_at, "model": m.model, "status": m.status}
        for m in messages
        if m.role == "user" or (m.content.strip() and m.status in SHARED_REPLY_STATUSES and m.id != writing)
    ]


def share(user, conversation_id: str) -> tuple[Conversation, str]:
    """Publish the active branch under a new token; returns the row and the link's path."""
    row = conversations.get_row(user, conversation_id)
    transcript = conversations.load_transcript(row)
    nonce = secrets.token_hex(NONCE_BYTES)
    token = _token(row.pk, nonce)
    messages = _snapshot_messages(transcript.active_branch(), writing=row.reply_message)
    with transaction.atomic():
        # Serialise with a concurrent share/unshare of the same conversation (PostgreSQL;
        # SQLite's write transactions are serial anyway).
        Conversation.objects.select_for_update().filter(pk=row.pk).first()
        SharedSnapshot.objects.update_or_create(
            conversation=row,
            defaults={"title": transcript.title, "messages": messages, "created_at": timezone.now()},
        )
        Conversation.objects.filter(pk=row.pk).update(share_token_hash=hash_token(token), share_nonce=nonce)
    row.share_token_hash, row.share_nonce = hash_token(token), nonce
    return row, share_path(token)


def current_link(user, conversation_id: str) -> str:
    """The link of a shared conversation, as a path: the same link and snapshot, nothing replaced."""
    row = conversations.get_row(user, conversation_id)
    if row.share_token_hash is None:
        raise ChatError("not_found", "This conversation is not shared.")
    token = _token(row.pk, row.share_nonce)
    if not row.share_nonce or hash_token(token) != row.share_token_hash:
        raise ChatError("not_found", "This link cannot be shown again; create a new link (the old one stops working).")
    return share_path(token)


def unshare(user, conversation_id: str) -> Conversation:
    """Withdraw the link (if any): the snapshot and the hash are gone when this returns."""
    row = conversations.get_row(user, conversation_id)
    with transaction.atomic():
        Conversation.objects.select_for_update().filter(pk=row.pk).first()
        SharedSnapshot.objects.filter(conversation=row).delete()
        Conversation.objects.filter(pk=row.pk).update(share_token_hash=None, share_nonce="")
    row.share_token_hash, row.share_nonce = None, ""
    return row


def find(token: str) -> SharedSnapshot | None:
    """The snapshot a token opens, or None (malformed, withdrawn, replaced or never issued)."""
    if not _TOKEN_RE.fullmatch(token):
        return None
    return SharedSnapshot.objects.filter(conversation__share_token_hash=hash_token(token)).first()


def page_messages(snapshot: SharedSnapshot) -> list[dict]:
    """The snapshot's messages for the template: `content` (text, for the template to
    escape) and `html` (sanitized: replies rendered by chat/rendering/, user text escaped)."""
    labels = model_labels()
    shown = []
    for item in snapshot.messages:
        message = Message(id="", parent=None, role=item["role"], content=item["content"],
                          created_at=item.get("created_at") or "", model=item.get("model"), status=item.get("status"))
        shown.append({"role": message.role, "content": message.content, "html": message_html(message),
                      "model": message.model, "model_label": labels.get(message.model or "", message.model),
                      "status": message.status})
    return shown


def model_labels() -> dict[str, str]:
    """Model id → the name people see (the picker's label); an id no longer offered shows as itself."""
    return {model.id: model.label for model in available_models()}


def shared_model(messages: list[dict]) -> str | None:
    """The name of the model of a shared copy: that of its last reply (None without one)."""
    for item in reversed(messages):
        if item["role"] == "assistant" and item.get("model"):
            return item["model_label"]
    return None
