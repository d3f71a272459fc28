"""The chat socket: one consumer per browser tab or client connection.

Each client frame type has one handler named after it (`message.send` →
`message_send`) that parses, calls a service, and sends what comes back. Events
from the channel layer (chat/events.py) deliver other sockets' and replies' news;
what this socket shows of the conversation it watches is chat/resume.py's job.
"""
from __future__ import annotations

import logging
from functools import partial

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from chat import credentials, events, protocol, services
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.protocol import Request
from chat.ratelimit import SlidingWindowLimiter
from chat.resume import ConversationFeed
from chat.wire import text_writer
from consumers.listening import dispatch_events

logger = logging.getLogger(__name__)


class ChatConsumer(AsyncWebsocketConsumer):
    # Per process and per user, shared by all of a user's sockets in this process.
    frame_limiter = SlidingWindowLimiter("frames")

    user = None
    feed: ConversationFeed | None = None
    _before_hello: list[dict] | None = None  # events held while the hello frame is being built
    _write_text = None  # the server's direct writer (chat/wire.py), if it offers one

    async def __call__(self, scope, receive, send) -> None:
        """Channels' `__call__`, except that the socket's channel is read only while an answer
        is due on it (consumers/listening.py): an idle socket keeps no receive pending there."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.base_send = send
        try:
            await dispatch_events(receive, partial(self.channel_layer.receive, self.channel_name), self.dispatch,
                                  self._channel_due)
        except StopConsumer:
            pass

    def _channel_due(self) -> bool:
        return self.feed is not None and self.feed.expecting_answer

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch without its `close_old_connections` before every event.

        That call is a hop to Channels' one shared sync thread. Per delta and per socket,
        it serialised every relayed token of the process behind that thread; per
        handshake and per client frame it was one more hop in line with every other
        socket's. This consumer reaches the database only through `run_blocking`, which
        closes stale connections itself, in its own worker thread, around each call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def deliver(self, event: dict) -> None:
        """An event of one of this socket's groups, handed over directly (chat/fanout.py):
        no trip through the channel layer and this socket's receive loop. Events that
        come before `hello` has gone out wait for it: `hello` is always the first frame."""
        if self._before_hello is not None:
            self._before_hello.append(event)
            return
        if event["type"] == events.FRAME_SEND and self._write_text is not None:
            # Every frame of every tab comes this way: straight to the server's writer, without
            # dispatch's handler lookup and the three coroutines between it and the writer.
            text = self.feed.admit(event)
            if text is not None:
                self._write_text(text)
            return
        await self.dispatch(event)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accept first so that the client sees the 4401 close code, not a bare 403.
            await self.accept()
            await self.close(code=4401)
            logger.info("socket refused", extra={"code": 4401, "reason": "not authenticated", "client": _client(self.scope)})
            return
        self.user = user
        self._write_text = text_writer(self.scope)
        self.feed = ConversationFeed(self, self.send_text)
        self._before_hello = []
        await events.join(events.user_group(user.pk), self)  # first, so that no sidebar news is missed
        await self.accept()
        await self.send_frame(protocol.hello(**await services.hello(user)))
        held, self._before_hello = self._before_hello, None
        for event in held:
            await self.dispatch(event)
        logger.info("socket connected", extra={"user": user.pk, "client": _client(self.scope)})

    async def disconnect(self, code: int) -> None:
        if self.user is None:
            return
        logger.info("socket closed", extra={"user": self.user.pk, "code": code})
        await events.leave(events.user_group(self.user.pk), self)
        await self.feed.leave()

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
        except ChatError as failure:
            ref = failure.ref or ref
            # Never the frame's content. Frames over the frame limit only at DEBUG: a flood stays out of the log.
            level = logging.DEBUG if wait is not None else logging.INFO
            logger.log(level, "request refused", extra={"user": self.user.pk, "frame": request.type if request else None,
                                                        "code": failure.code})
            await self.send_frame(protocol.error(failure.code, failure.message, ref, failure.retry_after))

    async def _frame_wait(self) -> float | None:
        """Seconds this user must wait before sending frames again, or None."""
        return await self.frame_limiter.hit(self.user.pk, settings.CHAT_RATE_LIMIT_FRAMES, settings.CHAT_RATE_LIMIT_WINDOW)

    async def send_frame(self, frame: dict) -> None:
        await self.send_text(events.encode(frame))

    async def send_text(self, text: str) -> None:
        """A text frame: by the server's direct writer where it offers one (config/frame_writer.py),
        which skips ASGI's chain of `send` coroutines, a cost paid per frame and per socket."""
        if self._write_text is not None:
            self._write_text(text)
        else:
            await self.send(text_data=text)

    # --- Client frames -------------------------------------------------------------

    async def ping(self, request: Request) -> None:
        await self.send_frame(protocol.pong(request.ref))

    async def conversation_open(self, request: Request) -> None:
        row = await services.get_row(self.user, request["conversation"])
        await self.feed.open(row.pk, lambda: services.open_conversation(row), request.ref)

    async def message_send(self, request: Request) -> None:
        turn = await services.send_message(self.user, request["conversation"], request["content"], request["model"],
                                           origin=self.channel_name, ref=request.ref)
        await self._run(turn)

    async def message_edit(self, request: Request) -> None:
        turn = await services.edit_message(self.user, request["conversation"], request["message"], request["content"],
                                           origin=self.channel_name, ref=request.ref)
        await self._run(turn)

    async def message_regenerate(self, request: Request) -> None:
        turn = await services.regenerate(self.user, request["conversation"], origin=self.channel_name, ref=request.ref)
        await self._run(turn)

    async def message_continue(self, request: Request) -> None:
        turn = await services.continue_reply(self.user, request["conversation"], request["message"],
                                             origin=self.channel_name, ref=request.ref)
        await self._run(turn)

    async def _run(self, turn: services.Turn) -> None:
        """Watch the turn's conversation, then start its reply: started whatever happens,
        since its model request is already on its way (services.Turn.begin)."""
        try:
            await self.feed.watch(turn.conversation_id)
        finally:
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

    async def conversation_share_link(self, request: Request) -> None:
        url = await services.share_link(self.user, request["conversation"])
        await self.send_frame(protocol.conversation_shared(request["conversation"], url, request.ref))

    async def conversation_pin(self, request: Request) -> None:
        pinned = request["pinned"] is not False  # absent: pin
        await services.organize(self.user, request["conversation"], pinned=pinned, origin=self.channel_name, ref=request.ref)

    async def conversation_archive(self, request: Request) -> None:
        archived = request["archived"] is not False  # absent: archive
        await services.organize(self.user, request["conversation"], archived=archived, origin=self.channel_name,
                                ref=request.ref)

    async def conversation_unshare(self, request: Request) -> None:
        await services.unshare(self.user, request["conversation"])
        await self.send_frame(protocol.conversation_shared(request["conversation"], None, request.ref))

    async def conversation_search(self, request: Request) -> None:
        results = await services.search(self.user, request["query"])
        await self.send_frame(protocol.search_results(request["query"], results, request.ref))

    # --- Channel-layer events (chat/events.py) -------------------------------------------

    async def frame_send(self, event: dict) -> None:
        await self.feed.frame(event)

    async def reply_snapshot(self, event: dict) -> None:
        await self.feed.snapshot(event)

    async def resume_expired(self, event: dict) -> None:
        await self.feed.expired(event)

    async def credentials_withdrawn(self, event: dict) -> None:
        """A credential of this user was withdrawn (chat/credentials.py): close if it was this socket's."""
        if not await run_blocking(credentials.still_valid, self.scope.get("credential"), self.user.pk, event):
            await self.close(code=credentials.CLOSE_CODE)


def _client(scope) -> str | None:
    """The peer's address as daphne saw it (a proxy's, unless daphne runs with --proxy-headers)."""
    client = scope.get("client")
    return client[0] if client else None
