"""A small, explicit client for the chat socket in tests, after channels.testing."""
from __future__ import annotations

import json
import uuid

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from tests.conftest import session_cookie


class ChatSocket:
    def __init__(self, communicator: WebsocketCommunicator):
        self.communicator = communicator
        self.hello: dict | None = None
        self.seen: list[dict] = []

    @classmethod
    async def connect(cls, user=None, *, origin: bytes | None = b"http://localhost", headers=()) -> "ChatSocket":
        all_headers = list(headers)
        if origin is not None:
            all_headers.append((b"origin", origin))
        if user is not None:
            all_headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
        socket = cls(WebsocketCommunicator(application, "/ws/chat/", headers=all_headers))
        connected, _ = await socket.communicator.connect()
        assert connected, "the handshake was refused"
        socket.hello = await socket.receive("hello")
        return socket

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

    async def close(self) -> None:
        await self.communicator.disconnect()
