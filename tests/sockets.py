"""A small, explicit client for the chat socket in tests, after channels.testing."""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from config.asgi import application
from tests.conftest import session_cookie

_open_sockets: set[ChatSocket] = set()


class ChatSocket:
    def __init__(self, communicator: WebsocketCommunicator):
        self.communicator = communicator
        self.hello: dict | None = None
        self.seen: list[dict] = []
        _open_sockets.add(self)

    @classmethod
    async def connect(cls, user=None, *, origin: bytes | None = b"http://localhost", headers=()) -> ChatSocket:
        socket = cls(await _communicator(user, origin, headers))
        connected, _ = await socket.communicator.connect()
        assert connected, "the handshake was refused"
        socket.hello = await socket.receive("hello")
        return socket

    @classmethod
    async def attempt(cls, user=None, *, origin: bytes | None = b"http://localhost", headers=()) -> tuple[str, object]:
        """Connect without expecting success: ("refused", code) when the handshake is refused,
        ("closed", code) when it is accepted and then closed, ("hello", socket) otherwise."""
        communicator = await _communicator(user, origin, headers)
        connected, code = await communicator.connect()
        if not connected:
            return "refused", code
        first = await communicator.receive_output(5)
        if first["type"] == "websocket.close":
            return "closed", first.get("code")
        socket = cls(communicator)
        socket.hello = json.loads(first["text"])
        assert socket.hello["type"] == "hello", socket.hello
        return "hello", socket

    async def send(self, type: str, **fields) -> str:
        ref = fields.pop("ref", None) or uuid.uuid4().hex[:12]
        await self.communicator.send_to(text_data=json.dumps({"type": type, "ref": ref, **fields}))
        return ref

    async def send_raw(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def next_frame(self, timeout: float = 5) -> dict:
        frame = json.loads(await self.communicator.receive_from(timeout))
        self.seen.append(frame)
        return frame

    async def receive(self, type: str, timeout: float = 10, **match) -> dict:
        """Skip frames until one of `type` (and matching fields) arrives."""
        skipped = []
        while True:
            try:
                frame = await self.next_frame(timeout)
            except Exception as error:
                raise AssertionError(f"expected a {type!r} frame {match or ''}; got only {[f['type'] for f in skipped]}") from error
            if frame["type"] == type and all(frame.get(k) == v for k, v in match.items()):
                return frame
            skipped.append(frame)

    async def reply_text(self, timeout: float = 20) -> tuple[str, dict]:
        """Collect deltas until the reply ends; return the joined text and the final frame."""
        text = []
        while True:
            frame = await self.next_frame(timeout)
            if frame["type"] == "reply.delta":
                text.append(frame["delta"])
            elif frame["type"] in ("reply.completed", "reply.failed"):
                return "".join(text), frame

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout)

    async def new_conversation(self, content: str = "hello there world") -> str:
        """Send a first message and wait for its reply and its title (a failed first reply is
        titled too, unless it could not be stored); its id."""
        await self.send("message.send", conversation=None, content=content)
        created = await self.receive("conversation.created")
        _, final = await self.reply_text()
        if final["type"] == "reply.completed" or final["error"]["code"] != "storage_unavailable":
            await self.receive("conversation.updated")  # the title
        return created["conversation"]["id"]

    async def close(self) -> None:
        _open_sockets.discard(self)
        await self.communicator.disconnect()


async def _communicator(user, origin: bytes | None, headers) -> WebsocketCommunicator:
    all_headers = list(headers)
    if not any(name.lower() == b"host" for name, _ in all_headers):
        all_headers.append((b"host", b"localhost"))  # as a browser sends it; the Origin check compares with it
    if origin is not None:
        all_headers.append((b"origin", origin))
    if user is not None:
        all_headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    return WebsocketCommunicator(application, "/ws/chat/", headers=all_headers)


def bearer(raw_token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {raw_token}".encode())]


async def create_user(username: str = "alice"):
    return await sync_to_async(get_user_model().objects.create_user)(username=username, password="correct horse battery staple")


async def close_open_sockets() -> None:
    """Close every socket a test opened and did not close (it failed before it could).

    A socket whose app has ended (a refused handshake) or that belongs to an earlier
    test's event loop has nothing left to close: awaiting it would only raise that
    loop's cancellation here."""
    loop = asyncio.get_running_loop()
    for socket in list(_open_sockets):
        future = socket.communicator.future
        if future.done() or future.get_loop() is not loop:
            continue
        with contextlib.suppress(Exception):
            await socket.close()
    _open_sockets.clear()


async def finish_replies(timeout: float = 20) -> None:
    """Wait for the replies still running in this event loop (their task is named
    `reply-<id>`), so that no test ends under one; cancel any that outlive `timeout`."""
    running = [t for t in asyncio.all_tasks() if t.get_name().startswith("reply-") and not t.done()]
    if not running:
        return
    _, late = await asyncio.wait(running, timeout=timeout)
    for task in late:
        task.cancel()
    assert not late, f"{len(late)} replies were still running after {timeout} s"
