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
    share_token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)

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
    def issue(cls, user, name: str = "") -> tuple["ApiToken", str]:
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
