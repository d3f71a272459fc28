"""The reply slot of a conversation: one reply at a time, across processes.

The only code that writes the `reply_*` fields of `Conversation`. A reply claims the
slot with a conditional UPDATE (the slot must be empty), proves it is alive with a
heartbeat, and releases the slot when its reply is stored. A claim whose heartbeat
went stale (its process died) is recovered: the reply is stored as interrupted and
the slot freed, so a crash never leaves a conversation stuck in "generating".
"""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from chat import conversations
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.models import Conversation
from chat.transcript import Transcript

logger = logging.getLogger(__name__)


def _fields(reply_id: str, parent_id: str | None, model: str, channel: str) -> dict:
    return dict(reply_message=reply_id, reply_parent=parent_id, reply_model=model, reply_channel=channel,
                reply_heartbeat=timezone.now())


def hold_new(row: Conversation, reply_id: str, parent_id: str, model: str, channel: str) -> None:
    """Fill the slot of a row not yet inserted (a new conversation is created claimed)."""
    for name, value in _fields(reply_id, parent_id, model, channel).items():
        setattr(row, name, value)


def claim(row: Conversation, reply_id: str, parent_id: str, model: str, channel: str) -> bool:
    """Take the conversation's reply slot; False if another reply holds it."""
    fields = _fields(reply_id, parent_id, model, channel)
    taken = Conversation.objects.filter(pk=row.pk, reply_message__isnull=True).update(**fields)
    if not taken and recover_if_stale(row):
        taken = Conversation.objects.filter(pk=row.pk, reply_message__isnull=True).update(**fields)
    if taken:
        for name, value in fields.items():
            setattr(row, name, value)
    return bool(taken)


def set_parent(row: Conversation, reply_id: str, parent_id: str, model: str) -> None:
    """Record what the claimed reply answers, once the user message is stored (and the
    model, which that write may have changed)."""
    Conversation.objects.filter(pk=row.pk, reply_message=reply_id).update(reply_parent=parent_id, reply_model=model)
    row.reply_parent, row.reply_model = parent_id, model


def release(row: Conversation, reply_id: str) -> None:
    Conversation.objects.filter(pk=row.pk, reply_message=reply_id).update(
        reply_message=None, reply_parent=None, reply_model="", reply_channel="", reply_heartbeat=None
    )


def _beat(row_pk: str, reply_id: str) -> None:
    Conversation.objects.filter(pk=row_pk, reply_message=reply_id).update(reply_heartbeat=timezone.now())


async def keep_alive(row: Conversation, reply_id: str) -> None:
    """Beat four times per stale period until cancelled, so no other process recovers a live reply."""
    while True:
        await asyncio.sleep(settings.CHAT_REPLY_STALE_SECONDS / 4)
        try:
            await run_blocking(_beat, row.pk, reply_id)
        except Exception:
            logger.warning("heartbeat failed", exc_info=True)


def recover_if_stale(row: Conversation) -> bool:
    """A claim whose process died: store its reply as interrupted and free the slot.

    True when the slot is free afterwards. Refreshes `row`.
    """
    row.refresh_from_db()
    if not row.reply_message:
        return True
    if row.reply_heartbeat and timezone.now() - row.reply_heartbeat < timedelta(seconds=settings.CHAT_REPLY_STALE_SECONDS):
        return False
    reply_id, parent_id, model = row.reply_message, row.reply_parent, row.reply_model

    def add_interrupted(transcript: Transcript) -> None:
        if reply_id not in transcript.messages and parent_id in transcript.messages:
            transcript.add_message(parent_id, "assistant", "", message_id=reply_id, model=model, status="interrupted")

    try:
        conversations.update_transcript(row, add_interrupted, touch=False)
    except ChatError:
        return False
    release(row, reply_id)
    row.refresh_from_db()
    logger.warning("reply recovered as interrupted", extra={"conversation": row.pk, "reply": reply_id})
    return True
