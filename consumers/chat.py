"""The chat socket: one consumer per browser tab or client connection.

Each client frame type has one handler named after it (`message.send` →
`message_send`) that parses, calls a service, and sends what comes back. Events
from the channel layer (`frame.send`, `reply.snapshot`) deliver other sockets'
and replies' news to this one.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import credentials, replies, services
from chat.broadcast import conversation_group, user_group
from chat.errors import ChatError
from chat.ratelimit import SlidingWindowLimiter
from consumers import protocol
from consumers.protocol import ProtocolError, Request

logger = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT = 3.0


@dataclass
class Resume:
    """A conversation opened mid-reply: live events wait until the reply's snapshot comes."""

    opening: services.Opening
    ref: str | None
    token: object = field(default_factory=object)
    buffered: list[dict] = field(default_factory=list)


class ChatConsumer(AsyncWebsocketConsumer):
    # Per process and per user, shared by all of a user's sockets in this process.
    frame_limiter = SlidingWindowLimiter("frames")

    user = None
    watching: str | None = None
    resume: Resume | None = None
    floor: tuple[str | None, int] = (None, 0)  # (reply, seq): older deltas are in the snapshot

    # Events that touch no database. Channels runs close_old_connections before every
    # event, a hop to its one sync thread: per delta and per socket, that hop
    # serialised every relayed token of the process behind one thread.
    RELAY_EVENTS = frozenset({"frame.send", "reply.snapshot"})

    async def dispatch(self, message: dict) -> None:
        if message["type"] in self.RELAY_EVENTS:
            await getattr(self, message["type"].replace(".", "_"))(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accept first so that the client sees the 4401 close code, not a bare 403.
            await self.accept()
            await self.close(code=4401)
            logger.info("socket refused", extra={"code": 4401, "reason": "not authenticated", "client": _client(self.scope)})
            return
        self.user = user
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()
        await self.send_frame(await services.hello(user))
        logger.info("socket connected", extra={"user": user.pk, "client": _client(self.scope)})

    async def disconnect(self, code: int) -> None:
        if self.user is None:
            return
        logger.info("socket closed", extra={"user": self.user.pk, "code": code})
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
        if self.watching:
            await self.channel_layer.group_discard(conversation_group(self.watching), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.user is None:
            return  # refused at connect (4401) and closing
        ref = request = wait = None
        try:
            wait = await self._frame_wait()  # every frame counts, unreadable ones too
            request = protocol.parse_request(text_data, max_bytes=settings.CHAT_MAX_FRAME_BYTES)
            ref = request.ref
            if wait is not None:
                raise ChatError("rate_limited", f"Too many frames; try again in {wait:.0f} s.", wait)
            await getattr(self, request.handler_name)(request)
        except (ProtocolError, ChatError) as failure:
            ref = getattr(failure, "ref", None) or ref
            # Never the frame's content. Frames over the frame limit only at DEBUG: a flood stays out of the log.
            level = logging.DEBUG if wait is not None else logging.INFO
            logger.log(level, "request refused", extra={"user": self.user.pk, "frame": request.type if request else None,
                                                        "code": failure.code})
            await self.send_frame(protocol.error(failure.code, failure.message, ref, failure.retry_after))

    async def _frame_wait(self) -> float | None:
        """Seconds this user must wait before sending frames again, or None."""
        return await self.frame_limiter.hit(self.user.pk, settings.CHAT_RATE_LIMIT_FRAMES, settings.CHAT_RATE_LIMIT_WINDOW)

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=protocol.encode(frame))

    async def watch(self, conversation_id: str) -> None:
        """Follow one conversation at a time: the page shows one."""
        if self.watching == conversation_id:
            return
        if self.watching:
            await self.channel_layer.group_discard(conversation_group(self.watching), self.channel_name)
        self.watching, self.resume = conversation_id, None
        await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)

    # --- Client frames -------------------------------------------------------------

    async def ping(self, request: Request) -> None:
        await self.send_frame(protocol.pong(request.ref))

    async def conversation_open(self, request: Request) -> None:
        row = await services.get_row(self.user, request["conversation"])
        await self.watch(row.pk)  # before reading the state, so no delta can slip between
        opening = await services.open_conversation(row)
        if opening.reply_channel is None:
            await self.send_frame(opening.state(None, request.ref))
            return
        self.resume = Resume(opening, request.ref)
        await replies.request_snapshot(opening.reply_channel, self.channel_name, row.pk)
        asyncio.create_task(self._expire_resume(self.resume.token))

    async def message_send(self, request: Request) -> None:
        turn = await services.send_message(self.user, request["conversation"], request["content"], request["model"],
                                           origin=self.channel_name, ref=request.ref)
        await self.watch(turn.conversation_id)
        await turn.start()

    async def message_edit(self, request: Request) -> None:
        turn = await services.edit_message(self.user, request["conversation"], request["message"], request["content"],
                                           origin=self.channel_name, ref=request.ref)
        await self.watch(turn.conversation_id)
        await turn.start()

    async def message_regenerate(self, request: Request) -> None:
        turn = await services.regenerate(self.user, request["conversation"], origin=self.channel_name, ref=request.ref)
        await self.watch(turn.conversation_id)
        await turn.start()

    async def branch_switch(self, request: Request) -> None:
        await services.switch_branch(self.user, request["conversation"], request["message"],
                                     origin=self.channel_name, ref=request.ref)

    async def generation_stop(self, request: Request) -> None:
        await services.stop_generation(self.user, request["conversation"])

    async def conversation_configure(self, request: Request) -> None:
        await services.configure(self.user, request["conversation"], model=request["model"],
                                 system_prompt=request["system_prompt"], origin=self.channel_name, ref=request.ref)

    async def conversation_rename(self, request: Request) -> None:
        await services.rename(self.user, request["conversation"], request["title"], origin=self.channel_name, ref=request.ref)

    async def conversation_delete(self, request: Request) -> None:
        await services.delete(self.user, request["conversation"], origin=self.channel_name, ref=request.ref)

    async def conversation_share(self, request: Request) -> None:
        url = await services.share(self.user, request["conversation"])
        await self.send_frame(protocol.conversation_shared(request["conversation"], url, request.ref))

    async def conversation_unshare(self, request: Request) -> None:
        await services.unshare(self.user, request["conversation"])
        await self.send_frame(protocol.conversation_shared(request["conversation"], None, request.ref))

    async def conversation_search(self, request: Request) -> None:
        results = await services.search(self.user, request["query"])
        await self.send_frame(protocol.search_results(request["query"], results, request.ref))

    # --- Channel-layer events ------------------------------------------------------------

    async def frame_send(self, event: dict) -> None:
        if event.get("watchers"):
            if event["conversation"] != self.watching:
                return  # an event still in flight from a conversation this socket left
            if self.resume is not None:
                self.resume.buffered.append(event)
                return
            if event.get("reply") is not None and event["reply"] == self.floor[0] and event["seq"] < self.floor[1]:
                return  # sent before the snapshot this socket resumed from, which holds it already
        text = event["ref_text"] if event.get("origin") == self.channel_name else event["text"]
        await self.send(text_data=text)

    async def reply_snapshot(self, event: dict) -> None:
        resume = self.resume
        if resume is None or event["conversation"] != self.watching:
            return
        self.resume = None
        generating = event["generating"]
        self.floor = (generating["message"], generating["seq"])
        await self.send_frame(resume.opening.state(generating, resume.ref))
        for buffered in resume.buffered:
            if buffered.get("reply") == generating["message"] and buffered.get("seq", -1) < generating["seq"]:
                continue  # already part of the snapshot (reply.started carries seq -1)
            await self.send(text_data=buffered["text"])

    async def resume_expired(self, event: dict) -> None:
        """The reply's task did not answer (it just ended, or its process died): reload."""
        resume = self.resume
        if resume is None or id(resume.token) != event["token"]:
            return
        self.resume = None
        opening = await services.open_conversation(resume.opening.row)
        await self.send_frame(opening.state(None, resume.ref))
        for buffered in resume.buffered:
            if buffered.get("seq") is None and buffered.get("reply") is None:
                await self.send(text_data=buffered["text"])

    async def credentials_withdrawn(self, event: dict) -> None:
        """A credential of this user was withdrawn (chat/credentials.py): close if it was this socket's."""
        if not await database_sync_to_async(credentials.still_valid)(self.scope.get("credential"), self.user.pk, event):
            await self.close(code=credentials.CLOSE_CODE)

    async def _expire_resume(self, token: object) -> None:
        await asyncio.sleep(SNAPSHOT_TIMEOUT)
        await self.channel_layer.send(self.channel_name, {"type": "resume.expired", "token": id(token)})


def _client(scope) -> str | None:
    """The peer's address as daphne saw it (a proxy's, unless daphne runs with --proxy-headers)."""
    client = scope.get("client")
    return client[0] if client else None
