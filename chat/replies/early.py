"""Asking the model while the turn is still being written.

A turn's worker-thread call stores the user message: it reads the transcript, changes
it and writes it back, then syncs it to disk (or waits for S3's conditional PUT). The
model needs only the changed transcript, so the request goes out as soon as the change
is made: the write and the model's own time to its first token overlap, instead of
adding up (bench §3). Nothing is shown before the write has landed: the reply's frames
start with `Turn.start`, after the call returned, and the pieces that came meanwhile
wait in the reply (`ReplyTask.open`). If the write fails, the request is cancelled: its
connection is closed, so the model stops, and the user gets the write's error as before.

A write can be retried (a lost race with another writer: the store reads again and
applies the change again). Each attempt offers its transcript; a request made for an
earlier attempt whose messages differ from the last one's is cancelled and made anew,
so a reply always answers the stored messages.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from chat.models import Conversation
from chat.replies.task import ReplyTask
from chat.transcript import Message, Transcript


@dataclass(frozen=True)
class ReplySpec:
    """What a reply answers, taken from the transcript as the turn's write leaves it."""

    parent_id: str
    model: str
    model_messages: list[dict]
    title_from: str | None  # the first user message, when this reply should title the conversation

    @classmethod
    def of(cls, transcript: Transcript, parent: Message) -> ReplySpec:
        branch = transcript.active_branch()
        needs_title = not transcript.title and sum(1 for m in branch if m.role == "user") == 1
        return cls(parent.id, transcript.model, transcript.model_messages(),
                   branch[0].content if needs_title else None)


class EarlyStart:
    """The reply of one turn, opened on the event loop as soon as the worker thread offers
    what it answers. Made on the loop; `offer` is the only method called from the thread."""

    def __init__(self, make: Callable[[Conversation, ReplySpec], ReplyTask]) -> None:
        self._loop = asyncio.get_running_loop()
        self._make = make
        self._offered: tuple[Conversation, ReplySpec] | None = None  # the last attempt's, set by the worker thread
        self._reply: ReplyTask | None = None
        self._answers: ReplySpec | None = None  # what `_reply` was opened for
        self._dropped: list[ReplyTask] = []

    def offer(self, row: Conversation, spec: ReplySpec) -> None:
        """Worker thread: the write's attempt changed the transcript of `row` into this."""
        self._offered = (row, spec)
        self._loop.call_soon_threadsafe(self._open)

    def _open(self) -> None:
        if self._offered is None:
            return  # abandoned
        row, spec = self._offered
        if spec is self._answers:
            return  # already asked
        if self._reply is not None:
            if spec == self._answers:  # a retried write that changed nothing the model sees
                self._answers = spec
                return
            self._reply.cancel_stream()
            self._dropped.append(self._reply)
        self._reply, self._answers = self._make(row, spec), spec
        self._reply.open()

    async def take(self) -> ReplyTask:
        """After the write landed: the reply to its last attempt (asked now if it was not yet)."""
        self._open()  # the last offer's callback may still be in the loop's queue
        await self._close_dropped()
        if self._reply is None:
            raise RuntimeError("the turn's write offered nothing to answer")
        return self._reply

    async def abandon(self) -> None:
        """The write failed: cancel every request made for it, and wait until they are closed."""
        self._offered = None
        if self._reply is not None:
            self._reply.cancel_stream()
            self._dropped.append(self._reply)
            self._reply = None
        await self._close_dropped()

    async def _close_dropped(self) -> None:
        dropped, self._dropped = self._dropped, []
        for reply in dropped:
            await reply.close_stream()
