"""A real WebSocket client (the `websockets` library) for tests against live servers."""
from __future__ import annotations

import asyncio
import json
import uuid

import websockets


class LiveSocket:
    def __init__(self, connection):
        self.connection = connection
        self.hello: dict | None = None

    @classmethod
    async def connect(cls, ws_url: str, token: str) -> "LiveSocket":
        connection = await websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"})
        socket = cls(connection)
        socket.hello = await socket.receive("hello")
        return socket

    async def send(self, type: str, **fields) -> str:
        ref = uuid.uuid4().hex[:12]
        await self.connection.send(json.dumps({"type": type, "ref": ref, **fields}))
        return ref

    async def next_frame(self, timeout: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def receive(self, type: str, timeout: float = 15, **match) -> dict:
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame(timeout)
                if frame["type"] == type and all(frame.get(k) == v for k, v in match.items()):
                    return frame
                seen.append(frame["type"])
        raise AssertionError(f"no {type!r} frame; saw {seen}")

    async def follow_reply(self, state_generating: dict | None = None, timeout: float = 30) -> tuple[str, dict]:
        """Apply deltas in seq order from a state (or from the start) until the reply ends."""
        text = state_generating["content"] if state_generating else ""
        expected = state_generating["seq"] if state_generating else 0
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame(timeout)
                if frame["type"] == "reply.delta":
                    assert frame["seq"] == expected, f"expected delta {expected}, got {frame['seq']}"
                    text += frame["delta"]
                    expected += 1
                elif frame["type"] in ("reply.completed", "reply.failed"):
                    return text, frame

    async def close(self) -> None:
        await self.connection.close()
