"""The reply slot of a conversation: one reply at a time, across processes.

The only code that writes the `reply_*` fields of `Conversation`. A reply claims the
slot with a conditional UPDATE (the slot must be empty), proves it is alive with a
heartbeat, and releases the slot when its reply is stored. Each beat also checkpoints
the reply's text so far (`reply_text`, with `reply_seq`, the seq of the delta after it),
so a claim whose heartbeat went stale (its process was killed) is recovered with that
text: the reply is stored as interrupted and the slot freed, so a crash never leaves a
conversation stuck in "generating" and loses at most the text of the last beat.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat import conversations, rows
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.models import Conversation
from chat.transcript import Transcript

logger = logging.getLogger(__name__)


def _fields(reply_id: str, parent_id: str | None, model: str, channel: str) -> dict:
    # A reply moves its conversation to the top of the sidebars: the claim writes updated_at,
    # so the turn's own write need not (one query fewer before the first token).
    now = timezone.now()
    return dict(reply_message=reply_id, reply_parent=parent_id, reply_model=model, reply_channel=channel,
                reply_heartbeat=now, reply_text="", reply_seq=0, updated_at=now)


def hold_new(row: Conversation, reply_id: str, parent_id: str, model: str, channel: str) -> None:
    """Fill the slot of a row not yet inserted (a new conversation is created claimed)."""
    for name, value in _fields(reply_id, parent_id, model, channel).items():
        setattr(row, name, value)


def claim(row: Conversation, reply_id: str, parent_id: str, model: str, channel: str) -> bool:
    """Take the conversation's reply slot; False if another reply holds it."""
    fields = _fields(reply_id, parent_id, model, channel)
    taken = rows.update(Conversation, fields, id=row.pk, reply_message=None)  # on every turn: see chat/rows.py
    if not taken and recover_if_stale(row):
        taken = rows.update(Conversation, fields, id=row.pk, reply_message=None)
    if taken:
        for name, value in fields.items():
            setattr(row, name, value)
    return bool(taken)


def set_parent(row: Conversation, reply_id: str, parent_id: str, model: str) -> None:
    """Record what the claimed reply answers, once the user message is stored (and the
    model, which that write may have changed)."""
    Conversation.objects.filter(pk=row.pk, reply_message=reply_id).update(reply_parent=parent_id, reply_model=model)
    row.reply_parent, row.reply_model = parent_id, model


def release(row: Conversation, reply_id: str, *, updated_at: datetime | None = None) -> None:
    """Free the slot; with `updated_at`, also put back the time the claim moved (a turn
    refused or failed before anything was stored changes nothing, its sidebar place included)."""
    fields = dict(reply_message=None, reply_parent=None, reply_model="", reply_channel="", reply_heartbeat=None,
                  reply_text="", reply_seq=0)
    if updated_at is not None:
        fields["updated_at"] = row.updated_at = updated_at
    rows.update(Conversation, fields, id=row.pk, reply_message=reply_id)


def beat_many(beats: list[tuple[str, str, str | None, int]]) -> None:
    """Heartbeats of running replies, `(row pk, reply id, text or None, seq)` each, in one
    transaction; with a text, also the checkpoint (the reply's text up to delta `seq`).

    Two `executemany` statements instead of an ORM update per reply: at 200 replies a
    process spent 8 % of its CPU building and running one UPDATE per reply per second
    (bench §1 profile). A claim released meanwhile is left alone (`reply_message` must
    still be the reply's)."""
    if not beats:
        return
    fields = {name: connection.ops.quote_name(Conversation._meta.get_field(name).column)
              for name in ("id", "reply_message", "reply_heartbeat", "reply_text", "reply_seq")}
    table = connection.ops.quote_name(Conversation._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    where = f"WHERE {fields['id']} = %s AND {fields['reply_message']} = %s"
    checkpoints = [(now, text, seq, pk, reply) for pk, reply, text, seq in beats if text is not None]
    heartbeats = [(now, pk, reply) for pk, reply, text, _ in beats if text is None]
    with transaction.atomic(), connection.cursor() as cursor:
        if checkpoints:
            cursor.executemany(f"UPDATE {table} SET {fields['reply_heartbeat']} = %s, {fields['reply_text']} = %s, "
                               f"{fields['reply_seq']} = %s {where}", checkpoints)
        if heartbeats:
            cursor.executemany(f"UPDATE {table} SET {fields['reply_heartbeat']} = %s {where}", heartbeats)


@dataclass
class _Beating:
    row_pk: str
    progress: Callable[[], tuple[str, int]]
    stored_seq: int = 0  # deltas only add text: an unchanged seq is an unchanged text


# The running replies of each event loop (one in a server process), beaten together.
_beating: dict[asyncio.AbstractEventLoop, dict[str, _Beating]] = {}
_beaters: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


async def keep_alive(row: Conversation, reply_id: str, progress: Callable[[], tuple[str, int]]) -> None:
    """Beat every CHAT_REPLY_CHECKPOINT_SECONDS until cancelled, so no other process recovers
    a live reply, storing the text so far (`progress()`: text, next seq) when it grew.

    The beats of every running reply of the process go in one worker-thread call per
    period (`beat_many`), not one each."""
    loop = asyncio.get_running_loop()
    for old in [old for old in _beating if old.is_closed()]:
        del _beating[old]
        _beaters.pop(old, None)
    replies = _beating.setdefault(loop, {})
    replies[reply_id] = _Beating(row.pk, progress)
    beater = _beaters.get(loop)
    if beater is None or beater.done():
        _beaters[loop] = loop.create_task(_beat_while_running(replies), name="reply-heartbeats")
    try:
        await loop.create_future()  # until cancelled: the reply ended
    finally:
        replies.pop(reply_id, None)


async def _beat_while_running(replies: dict[str, _Beating]) -> None:
    while replies:
        await asyncio.sleep(settings.CHAT_REPLY_CHECKPOINT_SECONDS)
        beats = []
        for reply_id, beating in list(replies.items()):
            text, seq = beating.progress()
            beats.append((beating.row_pk, reply_id, text if seq != beating.stored_seq else None, seq))
        try:
            await run_blocking(beat_many, beats)
        except Exception:
            logger.warning("heartbeat failed", exc_info=True, extra={"replies": len(beats)})
            continue
        for _, reply_id, text, seq in beats:
            if text is not None and reply_id in replies:
                replies[reply_id].stored_seq = seq


def recover_if_stale(row: Conversation) -> bool:
    """A claim whose process died: store its reply as interrupted, with the text of its
    last checkpoint, and free the slot.

    True when the slot is free afterwards. Refreshes `row`.
    """
    row.refresh_from_db()
    if not row.reply_message:
        return True
    if row.reply_heartbeat and timezone.now() - row.reply_heartbeat < timedelta(seconds=settings.CHAT_REPLY_STALE_SECONDS):
        return False
    reply_id, parent_id, model, text = row.reply_message, row.reply_parent, row.reply_model, row.reply_text

    def add_interrupted(transcript: Transcript) -> None:
        if reply_id not in transcript.messages and parent_id in transcript.messages:
            transcript.add_message(parent_id, "assistant", text, message_id=reply_id, model=model, status="interrupted")

    try:
        conversations.update_transcript(row, add_interrupted, touch=False)
    except ChatError:
        return False
    release(row, reply_id)
    row.refresh_from_db()
    logger.warning("reply recovered as interrupted", extra={"conversation": row.pk, "reply": reply_id,
                                                            "chars": len(text)})
    return True
