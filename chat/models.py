"""Database side of a conversation: what the sidebar lists and who may see it.

Transcripts live in the conversation store (a folder or S3); the database keeps the
metadata the sidebar needs in one query, the claim that makes "one reply at a time"
hold across processes, and the API tokens of non-browser clients.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_conversation_id() -> str:
    return uuid.uuid4().hex


class Conversation(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_conversation_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # The reply in progress, if any. Claimed with a conditional UPDATE so that two
    # processes can never start two replies in one conversation; the heartbeat lets
    # a later process recover a claim whose owner died.
    reply_message = models.CharField(max_length=32, null=True, blank=True)
    reply_parent = models.CharField(max_length=32, null=True, blank=True)
    reply_model = models.CharField(max_length=200, blank=True)
    reply_channel = models.CharField(max_length=200, blank=True)
    reply_heartbeat = models.DateTimeField(null=True, blank=True)
    # The reply's text so far (and the seq of the delta after it), checkpointed with the
    # heartbeat: a process killed mid-reply loses at most the text since the last beat.
    reply_text = models.TextField(blank=True, default="")
    reply_seq = models.IntegerField(default=0)
    share_token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    # The link's token is derived from this nonce and SECRET_KEY (chat/sharing.py), so the
    # owner can copy the link again while the database alone still does not give it away.
    share_nonce = models.CharField(max_length=32, blank=True, default="")
    # The sidebar's own organisation: pinned ones on top, archived ones out of the list.
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["owner", "-updated_at"], name="conversation_sidebar")]
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or self.id


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for non-browser clients; only its hash is stored."""

    PREFIX = "chat_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True)
    key_hint = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    @classmethod
    def issue(cls, user, name: str = "") -> tuple[ApiToken, str]:
        """Create a token and return it with the raw key, which is shown once."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, key_hash=hash_token(raw), key_hint=raw[:12])
        return token, raw

    @classmethod
    def user_for(cls, raw: str):
        token = cls.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
        if token is None or not token.user.is_active:
            return None
        cls.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user


class SharedSnapshot(models.Model):
    """What a share link shows: the active branch as it was when it was shared.

    The link's token is never stored: `Conversation.share_token_hash` holds its
    SHA-256. Sharing again replaces this row (and the hash); unsharing deletes it.
    `messages` is a list of {"role", "content", "created_at", "model", "status"}.
    """

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, primary_key=True,
                                        related_name="shared_snapshot")
    title = models.CharField(max_length=200, blank=True)
    messages = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)


class SearchEntry(models.Model):
    """One searchable text of a conversation: a message, or its title (`message_id` "").

    The full-text index over `text` lives outside the ORM (see chat/search.py and
    migration 0002): an FTS5 table kept in sync by triggers on SQLite, a stored
    tsvector column with a GIN index on PostgreSQL. `owner` repeats the
    conversation's owner so that a search filters without a join.
    """

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="search_entries")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=32, blank=True)
    role = models.CharField(max_length=16)
    text = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "message_id"], name="searchentry_one_per_message"),
        ]
        indexes = [models.Index(fields=["owner"], name="searchentry_owner")]


class ModelUsage(models.Model):
    """Requests made to metered (Hugging Face) models on one UTC day: one row per user,
    and one row with no user for the whole site. See chat/quotas.py."""

    day = models.DateField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="+")
    requests = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # NULLs are distinct in a plain unique constraint: the site's row needs its own.
            models.UniqueConstraint(fields=["day", "user"], condition=models.Q(user__isnull=False),
                                    name="modelusage_one_per_user_day"),
            models.UniqueConstraint(fields=["day"], condition=models.Q(user__isnull=True),
                                    name="modelusage_one_site_row_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.user_id or 'site'}: {self.requests}"


class AccountPreferences(models.Model):
    """What a user's new conversations start from (chat/preferences.py).

    No row means no preferences: the site's default model and system prompt. The
    instructions are copied into a conversation when it is created, so changing them
    later leaves existing conversations as they are; a conversation's own system
    prompt, set afterwards, replaces its copy.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="chat_preferences")
    custom_instructions = models.TextField(blank=True)
    default_model = models.CharField(max_length=200, blank=True)  # "": the site's default
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"preferences of user {self.user_id}"
