"""Replies owned by the server, not by the socket that asked for them.

A reply is one asyncio task in the process that accepted the message. It claims
the conversation in the database (one reply at a time, across processes), streams
from the model backend, sends numbered deltas to the conversation's group, and
stores the reply when it completes, fails or is stopped. Closing the tab that
asked changes nothing. The task listens on a channel of its own, recorded in the
claim, so that `generation.stop` and "what have you got so far?" reach it from any
socket on any process.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from chat import broadcast, conversations, quotas
from chat.backends import ModelError, get_backend
from chat.context import context_chars, fit_context
from chat.errors import ChatError
from chat.models import Conversation
from chat.presenters import conversation_dict, message_dict
from chat.rendering import StreamRenderer
from chat.titles import clean_title, title_request_messages
from chat.transcript import Message, Transcript
from consumers import protocol

logger = logging.getLogger(__name__)

STORE_ATTEMPTS = 4
TITLE_MAX_TOKENS = 24
TITLE_TIMEOUT = 60.0

# Running replies of this process, so that they are not garbage-collected and
# can be stopped on shutdown.
_running: dict[str, "ReplyTask"] = {}


async def run_blocking(function, *args, **kwargs):
    """Run DB or storage work off the event loop, in parallel with other sockets' work."""
    return await database_sync_to_async(function, thread_sensitive=False)(*args, **kwargs)


# --- The claim ----------------------------------------------------------------


def claim(row: Conversation, reply_id: str, parent_id: str, model: str, channel: str) -> bool:
    """Take the conversation's reply slot; False if another reply holds it."""
    fields = dict(reply_message=reply_id, reply_parent=parent_id, reply_model=model, reply_channel=channel, reply_heartbeat=timezone.now())
    taken = Conversation.objects.filter(pk=row.pk, reply_message__isnull=True).update(**fields)
    if not taken and recover_if_stale(row):
        taken = Conversation.objects.filter(pk=row.pk, reply_message__isnull=True).update(**fields)
    if taken:
        for name, value in fields.items():
            setattr(row, name, value)
    return bool(taken)


def release(row: Conversation, reply_id: str) -> None:
    Conversation.objects.filter(pk=row.pk, reply_message=reply_id).update(
        reply_message=None, reply_parent=None, reply_model="", reply_channel="", reply_heartbeat=None
    )


def _beat(row_pk: str, reply_id: str) -> None:
    Conversation.objects.filter(pk=row_pk, reply_message=reply_id).update(reply_heartbeat=timezone.now())


def recover_if_stale(row: Conversation) -> bool:
    """A claim whose process died: store its reply as interrupted and free the slot."""
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


# --- Control messages from sockets -------------------------------------------


async def request_stop(channel: str) -> None:
    await get_channel_layer().send(channel, {"type": "reply.stop"})


async def request_snapshot(channel: str, reply_to: str, conversation_id: str) -> None:
    await get_channel_layer().send(channel, {"type": "reply.snapshot_request", "reply_to": reply_to, "conversation": conversation_id})


# --- The reply task -------------------------------------------------------------


@dataclass
class ReplyTask:
    """Streams one reply from the model to every watching socket, then stores it."""

    row: Conversation
    reply_id: str
    parent_id: str
    model: str
    model_messages: list[dict]
    channel: str
    title_from: str | None = None  # the first user message, when the conversation needs a title
    seq: int = 0
    stopped: bool = False
    failure: ModelError | None = None
    _parts: list[str] = field(default_factory=list)
    _pending: list[str] = field(default_factory=list)
    _appended: list[str] = field(default_factory=list)
    _tail: str = ""
    _stream_done: bool = False
    pieces: int = 0  # text pieces streamed by the model: one per token with both backends
    _broadcast_failed: bool = False

    def __post_init__(self) -> None:
        self._wakeup = asyncio.Event()
        self._renderer = StreamRenderer(keep_text=False)  # the task keeps the text itself
        self._stream_task: asyncio.Task | None = None

    @property
    def conversation_id(self) -> str:
        return self.row.pk

    def start(self) -> asyncio.Task:
        _running[self.reply_id] = self
        task = asyncio.create_task(self.run(), name=f"reply-{self.reply_id}")
        task.add_done_callback(lambda _: _running.pop(self.reply_id, None))
        return task

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
        }

    async def run(self) -> None:
        started = time.monotonic()
        logger.info("reply started", extra={"conversation": self.conversation_id, "reply": self.reply_id,
                                            "user": self.row.owner_id, "model": self.model})
        helpers = [asyncio.create_task(self._listen()), asyncio.create_task(self._heartbeat())]
        try:
            await self._broadcast(protocol.reply_started(self.conversation_id, self.reply_id, self.parent_id, self.model))
            sender = asyncio.create_task(self._send_loop())
            self._stream_task = asyncio.create_task(self._stream())
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
            # The process is shutting down: keep what was written, marked interrupted.
            await asyncio.shield(self._store_and_release("interrupted", None))
            raise
        except Exception:
            logger.exception("reply task crashed", extra={"conversation": self.conversation_id})
            await self._store_and_release("failed", {"code": "model_failed", "message": "The server failed."})
        finally:
            await self._close_listener(helpers[0])
            helpers[1].cancel()
            logger.info(
                "reply ended",
                extra={"conversation": self.conversation_id, "reply": self.reply_id, "user": self.row.owner_id,
                       "model": self.model, "tokens": self.pieces, "deltas": self.seq,
                       "seconds": round(time.monotonic() - started, 3), "stopped": self.stopped,
                       "error": self.failure.code if self.failure else None},
            )

    async def _stream(self) -> None:
        backend = get_backend(self.model)
        messages = fit_context(self.model_messages, context_chars(self.model))
        stream = backend.stream(self.model, messages, max_tokens=settings.CHAT_MAX_REPLY_TOKENS)
        try:
            async for piece in stream:
                if piece:
                    self.pieces += 1
                    self._pending.append(piece)
                    self._wakeup.set()
        finally:
            await stream.aclose()

    async def _send_loop(self) -> None:
        """Send what the model wrote since the last send: one delta per send, never a backlog."""
        while True:
            if not self._pending:
                if self._stream_done:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
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

    async def _broadcast(self, frame: dict) -> None:
        # A lost channel layer must not lose the reply: it is still stored, and
        # sockets that missed deltas resynchronise from `conversation.state`.
        try:
            await broadcast.to_conversation(self.conversation_id, frame)
        except Exception:
            if not self._broadcast_failed:  # once per reply, not once per token
                logger.warning("broadcast failed", exc_info=True, extra={"conversation": self.conversation_id})
            self._broadcast_failed = True

    async def _listen(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                event = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("reply control channel failed", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if event.get("type") == "reply.closed":
                return
            if event.get("type") == "reply.stop":
                self.stop()
            elif event.get("type") == "reply.snapshot_request":
                answer = {"type": "reply.snapshot", "conversation": self.conversation_id, "generating": self.snapshot()}
                try:
                    await layer.send(event["reply_to"], answer)
                except Exception:
                    logger.warning("snapshot not delivered", exc_info=True)

    async def _close_listener(self, listener: asyncio.Task) -> None:
        """End the control loop with a message, not a cancel.

        With Redis, every process-local channel shares one real channel, and a
        receive cancelled mid-read can lose a message meant for another socket
        of this process (channels_redis pops it, then drops it). So the loop is
        told to stop and returns between two reads; cancel only as a last resort.
        """
        try:
            await get_channel_layer().send(self.channel, {"type": "reply.closed"})
            await asyncio.wait_for(asyncio.shield(listener), 5)
        except Exception:
            listener.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(settings.CHAT_REPLY_STALE_SECONDS / 4)
            try:
                await run_blocking(_beat, self.row.pk, self.reply_id)
            except Exception:
                logger.warning("heartbeat failed", exc_info=True)

    async def _finish(self) -> None:
        status = "stopped" if self.stopped else ("failed" if self.failure else "complete")
        error = {"code": self.failure.code, "message": self.failure.message} if self.failure else None
        transcript, message = await self._store_and_release(status, error)
        if message is None:
            fallback = Message(self.reply_id, self.parent_id, "assistant", "".join(self._parts), timezone.now().isoformat(),
                               model=self.model, status="failed")
            shown = await run_blocking(message_dict, None, fallback)
            await self._broadcast(protocol.reply_failed(self.conversation_id, shown, "storage_unavailable",
                                                        "The reply could not be saved: storage is unavailable."))
            return
        shown = await run_blocking(message_dict, transcript, message)  # renders the whole reply once
        if self.failure:
            await self._broadcast(protocol.reply_failed(self.conversation_id, shown, self.failure.code,
                                                        self.failure.message, self.failure.retry_after))
            return
        await self._broadcast(protocol.reply_completed(self.conversation_id, shown, self.stopped))
        if self.title_from is not None and status == "complete":
            await self._make_title(transcript)

    async def _store_and_release(self, status: str, error: dict | None) -> tuple[Transcript | None, Message | None]:
        content = "".join(self._parts + self._pending)
        result: tuple[Transcript | None, Message | None] = (None, None)
        for attempt in range(STORE_ATTEMPTS):
            try:
                result = await run_blocking(
                    conversations.append_message, self.row, self.parent_id, "assistant", content,
                    message_id=self.reply_id, model=self.model, status=status, error=error,
                )
                break
            except ChatError as failure:
                if failure.code != "storage_unavailable" or attempt == STORE_ATTEMPTS - 1:
                    logger.error("reply not stored", extra={"conversation": self.conversation_id, "code": failure.code})
                    break
                await asyncio.sleep(0.5 * 2**attempt)
        await run_blocking(release, self.row, self.reply_id)
        return result

    async def _make_title(self, transcript: Transcript) -> None:
        """Title a new conversation; never delays or fails the reply itself."""
        user_text = self.title_from or ""
        reply_text = "".join(self._parts)
        try:
            # A title costs a request of the daily budget; skipped when it would take the last one.
            titled = await run_blocking(quotas.try_count, self.row.owner_id, self.model, "title")
            raw = await asyncio.wait_for(self._complete(title_request_messages(user_text, reply_text)),
                                         TITLE_TIMEOUT) if titled else ""
        except Exception:
            logger.info("title call failed; using the user's words", exc_info=True)
            raw = ""
        title = clean_title(raw, user_text)
        try:
            await run_blocking(_set_title_once, self.row, title)
        except ChatError:
            return
        await broadcast.to_user(self.row.owner_id, protocol.conversation_updated(conversation_dict(self.row)))

    async def _complete(self, messages: list[dict]) -> str:
        stream = get_backend(self.model).stream(self.model, messages, max_tokens=TITLE_MAX_TOKENS)
        try:
            return "".join([piece async for piece in stream])
        finally:
            await stream.aclose()


def _set_title_once(row: Conversation, title: str) -> None:
    def set_if_untitled(transcript: Transcript) -> None:
        if not transcript.title:
            transcript.title = title

    conversations.update_transcript(row, set_if_untitled, touch=False)
