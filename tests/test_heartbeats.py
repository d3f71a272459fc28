"""Heartbeats of running replies (chat/replies/claim.py): every reply of the process in one
worker-thread call per period, each checkpointing its text when it grew, never touching
a claim that was released meanwhile."""
from __future__ import annotations

import asyncio
import datetime

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chat.models import Conversation
from chat.replies import claim

pytestmark = pytest.mark.django_db(transaction=True)

LONG_AGO = timezone.now() - datetime.timedelta(hours=1)


def claimed(owner, reply_id: str) -> Conversation:
    row = Conversation.objects.create(owner=owner, model="m")
    assert claim.claim(row, reply_id, "parent", "m", "channel")
    Conversation.objects.filter(pk=row.pk).update(reply_heartbeat=LONG_AGO)
    return row


def test_beats_checkpoint_claimed_replies_and_leave_a_released_claim_alone(make_user):
    owner = make_user()
    writing, silent, released = claimed(owner, "r1"), claimed(owner, "r2"), claimed(owner, "r3")
    claim.release(released, "r3")
    claim.beat_many([(writing.pk, "r1", "w0 w1", 2), (silent.pk, "r2", None, 0), (released.pk, "r3", "late", 9)])
    writing, silent, released = (Conversation.objects.get(pk=row.pk) for row in (writing, silent, released))
    assert (writing.reply_text, writing.reply_seq) == ("w0 w1", 2) and writing.reply_heartbeat > LONG_AGO
    assert (silent.reply_text, silent.reply_seq) == ("", 0) and silent.reply_heartbeat > LONG_AGO
    assert (released.reply_message, released.reply_heartbeat, released.reply_text) == (None, None, "")


def test_a_beat_for_another_reply_of_the_same_conversation_changes_nothing(make_user):
    row = claimed(make_user(), "current")
    claim.beat_many([(row.pk, "an-older-reply", "stale text", 5)])
    row = Conversation.objects.get(pk=row.pk)
    assert (row.reply_message, row.reply_text, row.reply_heartbeat) == ("current", "", LONG_AGO)


async def test_every_running_reply_is_beaten_in_one_call_per_period(make_user, settings, monkeypatch):
    settings.CHAT_REPLY_CHECKPOINT_SECONDS = 0.02
    owner = await sync_to_async(make_user)()
    rows = [await sync_to_async(claimed)(owner, f"r{i}") for i in range(3)]
    calls: list[list] = []
    all_three = asyncio.Event()
    real, loop = claim.beat_many, asyncio.get_running_loop()

    def recording(beats):  # in a worker thread
        real(beats)
        calls.append(beats)
        if len(beats) == 3:
            loop.call_soon_threadsafe(all_three.set)

    monkeypatch.setattr(claim, "beat_many", recording)
    progress = {f"r{i}": (f"text {i}", i + 1) for i in range(3)}
    beating = [asyncio.create_task(claim.keep_alive(row, f"r{i}", lambda i=i: progress[f"r{i}"]))
               for i, row in enumerate(rows)]
    await asyncio.wait_for(all_three.wait(), 10)
    assert sorted(reply for _, reply, _, _ in calls[-1]) == ["r0", "r1", "r2"]
    stored = {row.reply_message: (row.reply_text, row.reply_seq)
              async for row in Conversation.objects.filter(pk__in=[row.pk for row in rows])}
    assert stored == progress
    for task in beating:
        task.cancel()
    await asyncio.gather(*beating, return_exceptions=True)
    beater = claim._beaters[asyncio.get_running_loop()]
    await asyncio.wait_for(beater, 10)  # no reply left: the period's task ends
    assert not claim._beating[asyncio.get_running_loop()]
