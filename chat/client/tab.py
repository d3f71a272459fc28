"""One socket of a user, as a program drives it: the client of the live-server tests and
of the benchmarks (bench/).

A reader task takes every frame off the socket as soon as it arrives and records it
with its wall-clock arrival time, so a slow test step never leaves frames unread in
the kernel, and a token stamped by a scripted model gives its latency (arrival −
stamp, on one machine's clock). Two ways to read what came:

- by position: `wait(type, start=index)` finds a frame at or after an inbox index
  (the benchmarks, which look at timings);
- in order, like a plain socket: `receive(type)` skips frames up to the next match,
  `next_frame()` takes the next one, `follow_reply()` applies deltas in `seq` order
  (the tests).

Deltas go to `replies` (text and arrival times per reply); the inbox keeps them too
only with `keep_deltas=True` (the tests), since a benchmark's thousands of them
would only cost memory.

A tab offers permessage-deflate as browsers do (`compress=False`: it does not). With `count_bytes=True` it records, per
reply, the bytes of its `reply.delta` messages as JSON text and as they crossed the
wire (compressed payload plus frame header), read off the frames before they are
inflated.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import CTRL_OPCODES
from websockets.protocol import State

Piece = tuple[float, str]  # (arrival time, text)


@dataclass
class Reply:
    """What one tab saw of one reply."""

    message: str
    started: float | None = None
    deltas: list[Piece] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    delta_bytes: int = 0  # the reply.delta messages as JSON text (UTF-8)
    delta_wire_bytes: int = 0  # the same messages on the wire: frame headers, compressed payloads
    ended: float | None = None
    final: dict | None = None


def frame_header_bytes(payload: int) -> int:
    """The size of an unmasked (server → client) frame header for a payload (RFC 6455 §5.2)."""
    return 2 if payload < 126 else 4 if payload < 65536 else 10


class _WireCounter(ClientPerMessageDeflateFactory):
    """permessage-deflate, as `websockets` offers it by default, that also records each
    incoming message's size on the wire before the frames are inflated."""

    def __init__(self, sizes: deque) -> None:
        super().__init__()
        self.sizes = sizes

    def process_response_params(self, params, accepted_extensions):
        extension = super().process_response_params(params, accepted_extensions)
        decode, sizes, pending = extension.decode, self.sizes, [0]

        def counting_decode(frame, *, max_size=None):
            if frame.opcode in CTRL_OPCODES:  # pings and closes are not messages
                return decode(frame, max_size=max_size)
            pending[0] += frame_header_bytes(len(frame.data)) + len(frame.data)
            if frame.fin:
                sizes.append(pending[0])
                pending[0] = 0
            return decode(frame, max_size=max_size)

        extension.decode = counting_decode
        return extension


class Tab:
    """One socket of a user: connects, sends frames, records every frame as it arrives."""

    def __init__(self, ws_url: str, *, token: str | None = None, cookie: str | None = None,
                 origin: str | None = None, count_bytes: bool = False, keep_deltas: bool = False,
                 compress: bool = True) -> None:
        self.url = ws_url
        self.headers = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if cookie:
            self.headers["Cookie"] = cookie
        self.origin = origin
        self.count_bytes = count_bytes
        self.compress = compress  # offer permessage-deflate, as browsers do
        self.keep_deltas = keep_deltas
        self.ws = None
        self.hello: dict | None = None
        self.inbox: list[tuple[float, dict]] = []
        self.replies: dict[str, Reply] = {}
        self.closed_with: str | None = None
        self._closed_by: ConnectionClosed | None = None
        self._cursor = 0  # the next inbox index `receive`/`next_frame` look at
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._wire_sizes: deque[int] = deque()  # per message, while compression is on (count_bytes)

    @classmethod
    async def open(cls, ws_url: str, token: str, timeout: float = 15) -> Tab:
        """A connected tab with a bearer token that keeps every frame, as the tests read them."""
        tab = cls(ws_url, token=token, keep_deltas=True)
        await tab.connect(timeout)
        return tab

    async def connect(self, timeout: float = 30) -> dict:
        if not self.compress:
            compression = {"compression": None}
        elif self.count_bytes:
            compression = {"compression": None, "extensions": [_WireCounter(self._wire_sizes)]}
        else:
            compression = {}
        self.ws = await connect(self.url, additional_headers=self.headers, origin=self.origin, ping_interval=None,
                                max_size=None, open_timeout=timeout, close_timeout=2, **compression)
        self._reader = asyncio.create_task(self._read())
        index, _, self.hello = await self.wait("hello", timeout=timeout)
        self._cursor = index + 1
        return self.hello

    async def send(self, type: str, **fields) -> float:
        """Send a frame (with a fresh `ref` unless given); return the wall-clock time just before it left."""
        text = json.dumps({"type": type, "ref": fields.pop("ref", None) or uuid.uuid4().hex[:12], **fields})
        sent = time.time()
        await self.ws.send(text)
        return sent

    # --- Reading by position -------------------------------------------------------

    async def wait(self, type: str | None, timeout: float = 30, start: int = 0, **match) -> tuple[int, float, dict]:
        """The first frame of `type` (any type: None) with matching fields at or after inbox index `start`."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.inbox):
                arrived, frame = self.inbox[index]
                if type in (None, frame.get("type")) and all(frame.get(k) == v for k, v in match.items()):
                    return index, arrived, frame
                index += 1
            if self.closed_with is not None:
                if self._closed_by is not None:
                    raise self._closed_by
                raise ConnectionError(f"socket closed ({self.closed_with}) while waiting for {type}")
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [f.get("type") for _, f in self.inbox[start:]][-8:]
                raise TimeoutError(f"no {type} {match or ''} within {timeout} s (last frames: {seen})")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    async def turn(self, conversation: str, content: str, timeout: float = 120) -> tuple[float, Reply]:
        """Send a message and wait for its reply to end; (send time, the reply as seen here)."""
        start = len(self.inbox)
        sent = await self.send("message.send", conversation=conversation, content=content)
        match = {"conversation": conversation} if conversation else {}  # None: a new conversation
        _, _, started = await self.wait("reply.started", timeout=timeout, start=start, **match)
        await self.wait_reply(started["message"], timeout)
        return sent, self.replies[started["message"]]

    async def wait_reply(self, message: str, timeout: float = 120) -> Reply:
        deadline = time.monotonic() + timeout
        while True:
            reply = self.replies.get(message)
            if reply is not None and reply.ended is not None:
                return reply
            if self.closed_with is not None:
                raise ConnectionError(f"socket closed ({self.closed_with}) during reply {message}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"reply {message} did not end within {timeout} s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    # --- Reading in order --------------------------------------------------------------

    async def next_frame(self, timeout: float = 10) -> dict:
        index, _, frame = await self.wait(None, timeout=timeout, start=self._cursor)
        self._cursor = index + 1
        return frame

    async def receive(self, type: str, timeout: float = 15, **match) -> dict:
        """Skip frames until one of `type` (and matching fields) arrives."""
        index, _, frame = await self.wait(type, timeout=timeout, start=self._cursor, **match)
        self._cursor = index + 1
        return frame

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

    # --- The reader ------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                arrived = time.time()
                wire = self._wire_sizes.popleft() if self._wire_sizes else None
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "reply.delta":
                    reply = self._reply(frame["message"])
                    reply.deltas.append((arrived, frame["delta"]))
                    reply.seqs.append(frame["seq"])
                    if self.count_bytes:
                        size = len(raw.encode()) if isinstance(raw, str) else len(raw)
                        reply.delta_bytes += size
                        reply.delta_wire_bytes += wire if wire is not None else frame_header_bytes(size) + size
                    if not self.keep_deltas:
                        continue
                elif kind == "reply.started":
                    self._reply(frame["message"]).started = arrived
                elif kind in ("reply.completed", "reply.failed"):
                    reply = self._reply(frame["message"]["id"])
                    reply.ended, reply.final = arrived, frame
                self.inbox.append((arrived, frame))
                self._arrived.set()
        except ConnectionClosed as closed:
            self._closed_by = closed
            self.closed_with = str(closed)
        except Exception as error:  # a bug here must not hang the waiters
            self.closed_with = f"reader failed: {error!r}"
        finally:
            if self.closed_with is None:  # a clean close ends the iteration without raising
                if self.ws.protocol.state is State.CLOSED:
                    self._closed_by = self.ws.protocol.close_exc
                self.closed_with = str(self._closed_by or "closed")  # else: cancelled by close()
            self._arrived.set()

    def _reply(self, message: str) -> Reply:
        reply = self.replies.get(message)
        if reply is None:
            reply = self.replies[message] = Reply(message)
        return reply

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                self.ws.transport.abort()
        if self._reader is not None:
            self._reader.cancel()
