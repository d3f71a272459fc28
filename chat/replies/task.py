"""One server-owned task per reply: stream from the model, fan out, store.

The task runs in the process that accepted the message, not tied to the socket
that asked: closing that tab changes nothing. It streams from the model backend,
coalesces what the model wrote while a send was in flight into one numbered delta,
sends deltas to the conversation's group, and stores the reply when it completes,
fails, is cut by the token limit or is stopped, then releases the claim
(chat/replies/claim.py). Its control channel (chat/replies/control.py) hears `stop` and
snapshot requests. A continued reply (`message.continue`) is the same task writing on
after the stored text (`prefix`) of the same message; while the local model's line
holds the reply, every watcher hears `reply.waiting` with its place.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from chat import conversations, events, protocol
from chat.backends import ModelError, get_backend
from chat.blocking import run_blocking
from chat.context import context_chars, fit_context
from chat.errors import ChatError
from chat.models import Conversation
from chat.presenters import message_dict
from chat.rendering import StreamRenderer
from chat.replies import claim, control, titling
from chat.transcript import Message, Transcript

logger = logging.getLogger(__name__)

STORE_ATTEMPTS = 4

# Running replies of this process, so that they are not garbage-collected and
# can be stopped on shutdown.
running: dict[str, ReplyTask] = {}


@dataclass
class ReplyTask:
    """Streams one reply from the model to every watching socket, then stores it."""

    row: Conversation
    reply_id: str
    parent_id: str
    model: str
    model_messages: list[dict]
    channel: str  # the control channel, recorded in the claim
    title_from: str | None = None  # the first user message, when the conversation needs a title
    prefix: str | None = None  # a continued reply: its stored text, which the model carries on
    user: int | None = None  # whose turn it is in the local model's line
    seq: int = 0
    stopped: bool = False
    failure: ModelError | None = None
    finish_reason: str | None = None  # the stream's: "length" stores the reply as cut
    waiting: int | None = None  # generations ahead of this one in the local model's line, while it waits
    pieces: int = 0  # text pieces streamed by the model: one per token with both backends
    # Blocking work of the turn that can wait until the first delta is out (the user
    # message's search index); done before the reply is stored at the latest.
    after_first_delta: list[Callable[[], None]] = field(default_factory=list)
    _parts: list[str] = field(default_factory=list)
    _pending: list[str] = field(default_factory=list)
    _appended: list[str] = field(default_factory=list)
    _tail: str = ""
    _stream_done: bool = False
    _live: bool = False  # reply.started is out: deltas may follow
    _sending: bool = False  # a delta is being sent (by the sender task or the stream's flush)
    _broadcast_failed: bool = False
    _stored: bool = False  # the reply is in the transcript with its final status
    _waiting_news: bool = False  # `waiting` changed since the last reply.waiting

    def __post_init__(self) -> None:
        self._wakeup = asyncio.Event()
        self._renderer = StreamRenderer(keep_text=False)  # the task keeps the text itself
        self._stream_task: asyncio.Task | None = None
        self._deferred: asyncio.Task | None = None
        if self.prefix:  # the stored text comes first, as if it had been streamed already
            html = self._renderer.feed(self.prefix)
            self._parts.append(self.prefix)
            self._appended.append(html["append"])
            self._tail = html["tail"]
        self.task: asyncio.Task | None = None  # cancelled on shutdown (chat/replies/shutdown.py)

    @property
    def conversation_id(self) -> str:
        return self.row.pk

    def start(self) -> asyncio.Task:
        running[self.reply_id] = self
        task = self.task = asyncio.create_task(self.run(), name=f"reply-{self.reply_id}")
        task.add_done_callback(lambda _: running.pop(self.reply_id, None))
        return task

    def begin_stream(self) -> None:
        """Send the model its request now, ahead of `run()`.

        The turn's own work after the store (the user message's frame, the sidebar
        events, the socket joining the conversation, the reply's start) took about
        1.2 ms of the event loop, and the model's request waited behind it. Sent first,
        the model reads the prompt meanwhile; what it writes waits in `_pending` until
        `run()` has sent `reply.started`, so the frames keep their order (bench §3)."""
        if self._stream_task is None:
            self._stream_task = asyncio.create_task(self._stream(), name=f"reply-stream-{self.reply_id}")

    def stop(self) -> None:
        self.stopped = True
        if self._stream_task:
            self._stream_task.cancel()

    def snapshot(self) -> dict:
        """The reply so far, consistent with `seq`: deltas from `seq` on complete it."""
        return {
            "message": self.reply_id,
            "model": self.model,
            "content": "".join(self._parts),
            "html": "".join(self._appended),
            "tail": self._tail,
            "seq": self.seq,
            "waiting": self.waiting,
        }

    async def run(self) -> None:
        started = time.monotonic()
        logger.info("reply started", extra={"conversation": self.conversation_id, "reply": self.reply_id,
                                            "user": self.row.owner_id, "model": self.model})
        listener = asyncio.create_task(control.listen(self.channel, self))
        heartbeat = asyncio.create_task(claim.keep_alive(self.row, self.reply_id, self._progress))
        try:
            await self._broadcast(self._started_frame())
            self._live = True
            sender = asyncio.create_task(self._send_loop())
            self.begin_stream()
            if self.stopped:  # a stop that came before the stream existed
                self._stream_task.cancel()
            try:
                await self._stream_task
            except asyncio.CancelledError:
                if not self.stopped or asyncio.current_task().cancelling():
                    raise
            except ModelError as error:
                self.failure = error
            except Exception:
                logger.exception("model backend crashed", extra={"conversation": self.conversation_id})
                self.failure = ModelError("model_failed", "The model failed while writing its reply.")
            self._stream_done = True
            self._wakeup.set()
            await sender
            await self._finish()
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupt())
            raise
        except Exception:
            logger.exception("reply task crashed", extra={"conversation": self.conversation_id})
            if not self._stored:  # a crash after the reply was stored keeps what was stored
                await self._store_and_release("failed", {"code": "model_failed", "message": "The server failed."})
        finally:
            await control.close(self.channel, listener)
            heartbeat.cancel()
            logger.info(
                "reply ended",
                extra={"conversation": self.conversation_id, "reply": self.reply_id, "user": self.row.owner_id,
                       "model": self.model, "tokens": self.pieces, "deltas": self.seq,
                       "seconds": round(time.monotonic() - started, 3), "stopped": self.stopped,
                       "error": self.failure.code if self.failure else None},
            )

    def _started_frame(self) -> dict:
        if self.prefix is None:
            return protocol.reply_started(self.conversation_id, self.reply_id, self.parent_id, self.model)
        # A continued reply: tabs show the text so far, then append the deltas (seq from 0).
        return protocol.reply_started(self.conversation_id, self.reply_id, self.parent_id, self.model,
                                      continues=True, content=self.prefix,
                                      html={"append": "".join(self._appended), "tail": self._tail})

    def _progress(self) -> tuple[str, int]:
        """The checkpoint the heartbeat stores: the text sent so far and the seq of the next delta."""
        return "".join(self._parts), self.seq

    async def _interrupt(self) -> None:
        """The process is shutting down (chat/replies/shutdown.py): keep what was written,
        marked interrupted, free the conversation, and tell every tab that still hears us.

        A store cancelled mid-way still finishes in its thread: the reply may be stored
        already, and is then kept as it is."""
        content = "".join(self._parts + self._pending)

        def add_unless_stored(transcript: Transcript) -> Message:
            stored = transcript.messages.get(self.reply_id)
            if stored is None:
                transcript.add_message(self.parent_id, "assistant", content, message_id=self.reply_id,
                                       model=self.model, status="interrupted")
            elif self.prefix is not None and stored.content == self.prefix:  # a continuation, not stored yet
                stored.content, stored.status, stored.error = content, "interrupted", None
            return transcript.messages[self.reply_id]

        transcript = message = None
        try:
            deferred = self._start_deferred()
            if deferred is not None:
                await deferred
            transcript, message = await run_blocking(conversations.update_transcript, self.row, add_unless_stored)
        except Exception:
            logger.exception("interrupted reply not stored", extra={"conversation": self.conversation_id})
        await run_blocking(claim.release, self.row, self.reply_id)
        if message is not None:
            shown = await run_blocking(message_dict, transcript, message)
            await self._broadcast(protocol.reply_completed(self.conversation_id, shown, False))

    async def _stream(self) -> None:
        backend = get_backend(self.model)
        # A continued reply is the last message (assistant): the backend carries it on.
        messages = fit_context(self.model_messages, context_chars(self.model))
        stream = backend.stream(self.model, messages, max_tokens=settings.CHAT_MAX_REPLY_TOKENS,
                                user=self.user, purpose="reply", on_wait=self._on_wait)
        stream.flush = self._flush
        try:
            async for piece in stream:
                piece = piece.replace("\x00", "")  # PostgreSQL refuses NUL in text (issue 16)
                if piece:
                    self.pieces += 1
                    self._pending.append(piece)
                    if self.pieces == 1:
                        # The first token goes out now, alone: otherwise the pieces that came
                        # in one read are all parsed first (1.2 ms for 20 pieces, bench §3).
                        await self._flush()
                        if not stream.flushes:
                            await asyncio.sleep(0)  # the sender's turn
                    elif not stream.flushes:
                        self._wakeup.set()  # else the backend awaits `_flush` before its next read
            if stream.flushes:
                await self._flush()  # the last read's pieces
            self.finish_reason = stream.finish_reason
        finally:
            await stream.aclose()

    async def _flush(self) -> None:
        """What the model wrote in its last read, sent as one delta by the stream's own task
        (`ModelStream.flush`), once the backend has handed over every piece of the read.

        Sent by the sender task instead, the delta waited for that task's turn of the event
        loop: a token took three turns from the model's socket to the tab's (the read, the
        stream task, the sender), and each turn of a loop busy with 200 replies starting at
        once lasts tens of milliseconds. The sender still sends what comes before
        `reply.started` is out, what follows a `reply.waiting` it has to send first, what a
        backend that does not flush writes, and the end."""
        if self._pending and self._live and not self._sending and not self._waiting_news:
            await self._send_pending()
        elif self._pending:
            self._wakeup.set()

    def _on_wait(self, ahead: int) -> None:
        """The local model's line moved: tell the watchers (0: the model has started on it).
        A reply that never waited sends no reply.waiting at all."""
        if ahead == 0 and self.waiting is None:
            return
        self.waiting = ahead or None
        self._waiting_news = True
        self._wakeup.set()

    async def _send_loop(self) -> None:
        """Send what the model wrote since the last send: one delta per send, never a backlog."""
        while True:
            if self._waiting_news:
                self._waiting_news = False
                await self._broadcast(protocol.reply_waiting(self.conversation_id, self.reply_id, self.waiting or 0))
                continue
            if not self._pending or self._sending:
                if self._stream_done and not self._pending:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            await self._send_pending()

    async def _send_pending(self) -> None:
        """One delta of everything pending; one sender at a time, so that `seq` follows the text."""
        self._sending = True
        try:
            delta = "".join(self._pending)
            self._pending.clear()
            html = self._renderer.feed(delta)
            self._parts.append(delta)
            if html["append"]:
                self._appended.append(html["append"])
            self._tail = html["tail"]
            frame = protocol.reply_delta(self.conversation_id, self.reply_id, self.seq, delta, html)
            self.seq += 1
            await self._broadcast(frame)
        finally:
            self._sending = False
            if self._pending or self._stream_done:
                self._wakeup.set()  # what came meanwhile, or the end: the sender takes it
        if self.seq == 1:
            self._start_deferred()

    def _start_deferred(self) -> asyncio.Task | None:
        """Run `after_first_delta` in a worker thread, once; the task, to await."""
        if self._deferred is None and self.after_first_delta:
            self._deferred = asyncio.create_task(self._run_deferred(), name=f"reply-deferred-{self.reply_id}")
        return self._deferred

    async def _run_deferred(self) -> None:
        for job in self.after_first_delta:
            try:
                await run_blocking(job)
            except Exception:  # a stale search index costs results, not the reply
                logger.exception("deferred reply work failed", extra={"conversation": self.conversation_id})

    async def _broadcast(self, frame: dict) -> None:
        # A lost channel layer must not lose the reply: it is still stored, and
        # sockets that missed deltas resynchronise from `conversation.state`.
        try:
            await events.to_conversation(self.conversation_id, frame)
        except Exception:
            if not self._broadcast_failed:  # once per reply, not once per token
                logger.warning("broadcast failed", exc_info=True, extra={"conversation": self.conversation_id})
            self._broadcast_failed = True

    async def _finish(self) -> None:
        deferred = self._start_deferred()
        if deferred is not None:  # a search after reply.completed finds the user message
            await deferred
        status = "stopped" if self.stopped else "failed" if self.failure else "cut" if self.finish_reason == "length" else "complete"
        error = {"code": self.failure.code, "message": self.failure.message} if self.failure else None
        shown = await self._store_and_release(status, error)
        if shown is None:
            fallback = Message(self.reply_id, self.parent_id, "assistant", "".join(self._parts), timezone.now().isoformat(),
                               model=self.model, status="failed")
            shown = await run_blocking(message_dict, None, fallback)
            await self._broadcast(protocol.reply_failed(self.conversation_id, shown, "storage_unavailable",
                                                        "The reply could not be saved: storage is unavailable."))
            return
        if self.failure:
            await self._broadcast(protocol.reply_failed(self.conversation_id, shown, self.failure.code,
                                                        self.failure.message, self.failure.retry_after))
        else:
            await self._broadcast(protocol.reply_completed(self.conversation_id, shown, self.stopped))
        if self.title_from is not None:  # also after a failed or stopped first reply: the sidebar needs a name
            await titling.make_title(self.row, self.model, self.title_from, "".join(self._parts),
                                     ask_model=titling.model_may_answer(self.failure))

    async def _store_and_release(self, status: str, error: dict | None) -> dict | None:
        """Store the reply, retrying while storage is down (CHAT_REPLY_STORE_BACKOFF, doubled), and
        free the slot; the stored message as tabs show it, or None if it could not be stored."""
        content = "".join(self._parts + self._pending)
        for attempt in range(STORE_ATTEMPTS):
            last = attempt == STORE_ATTEMPTS - 1
            try:
                shown = await run_blocking(store_release_show, self.row, self.reply_id, self.parent_id, content,
                                           model=self.model, status=status, error=error, last_attempt=last)
                self._stored = True
                return shown
            except ChatError as failure:
                if not will_retry(failure, last):
                    logger.error("reply not stored", extra={"conversation": self.conversation_id, "code": failure.code})
                    return None
                await asyncio.sleep(settings.CHAT_REPLY_STORE_BACKOFF * 2**attempt)
        return None


def will_retry(failure: ChatError, last_attempt: bool) -> bool:
    """Whether a failed store of a finished reply is tried again: while storage is down."""
    return failure.code == "storage_unavailable" and not last_attempt


def store_release_show(row: Conversation, reply_id: str, parent_id: str, content: str, *, model: str, status: str,
                       error: dict | None, last_attempt: bool) -> dict:
    """Store a finished reply, free its conversation and render it for the tabs: one worker-thread
    call instead of three, since each call costs a thread hop (about 0.1 ms of CPU here) on top
    of its work, and the reply's end waited for all three in turn.

    A store that fails frees the conversation unless it will be tried again (`will_retry`):
    then the conversation stays claimed by the reply until its next attempt."""
    try:
        transcript, message = conversations.append_message(row, parent_id, "assistant", content, message_id=reply_id,
                                                           model=model, status=status, error=error)
    except ChatError as failure:
        if not will_retry(failure, last_attempt):
            claim.release(row, reply_id)
        raise
    try:
        claim.release(row, reply_id)
    except Exception:  # the reply is stored: its claim goes stale and the next turn recovers it
        logger.exception("claim not released", extra={"conversation": row.pk, "reply": reply_id})
    return message_dict(transcript, message)  # renders the whole reply once
