"""Clients that measure: a WebSocket tab (the `websockets` library) and a direct model reader.

Both timestamp what they receive with the wall clock as soon as it arrives, so that a
token stamped by the scripted model (`#stamp`: its send time, µs modulo 10**9) gives
its latency: arrival − stamp, on one machine's clock.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fake_model_server import STAMP, STAMP_MODULO

Piece = tuple[float, str]  # (arrival time, text)


@dataclass
class Reply:
    """What one tab saw of one reply."""

    message: str
    started: float | None = None
    deltas: list[Piece] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    delta_bytes: int = 0
    ended: float | None = None
    final: dict | None = None


class Tab:
    """One socket of a user: connects, sends frames, records every frame as it arrives."""

    def __init__(self, ws_url: str, *, token: str | None = None, cookie: str | None = None,
                 origin: str | None = None, count_bytes: bool = False) -> None:
        self.url = ws_url
        self.headers = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if cookie:
            self.headers["Cookie"] = cookie
        self.origin = origin
        self.count_bytes = count_bytes
        self.ws = None
        self.inbox: list[tuple[float, dict]] = []
        self.replies: dict[str, Reply] = {}
        self.closed_with: str | None = None
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def connect(self, timeout: float = 30) -> dict:
        self.ws = await connect(self.url, additional_headers=self.headers, origin=self.origin, ping_interval=None,
                                max_size=None, open_timeout=timeout, close_timeout=2)
        self._reader = asyncio.create_task(self._read())
        _, _, hello = await self.wait("hello", timeout=timeout)
        return hello

    async def send(self, type: str, **fields) -> float:
        """Send a frame; return the wall-clock time just before it left."""
        text = json.dumps({"type": type, **fields})
        sent = time.time()
        await self.ws.send(text)
        return sent

    async def wait(self, type: str, timeout: float = 30, start: int = 0, **match) -> tuple[int, float, dict]:
        """The first frame of `type` (with matching fields) at or after inbox index `start`."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.inbox):
                arrived, frame = self.inbox[index]
                if frame.get("type") == type and all(frame.get(k) == v for k, v in match.items()):
                    return index, arrived, frame
                index += 1
            if self.closed_with is not None:
                raise ConnectionError(f"socket closed ({self.closed_with}) while waiting for {type}")
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [f.get("type") for _, f in self.inbox[start:]][-8:]
                raise TimeoutError(f"no {type} {match or ''} within {timeout} s (last frames: {seen})")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                arrived = time.time()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "reply.delta":
                    reply = self._reply(frame["message"])
                    reply.deltas.append((arrived, frame["delta"]))
                    reply.seqs.append(frame["seq"])
                    if self.count_bytes:
                        reply.delta_bytes += len(raw.encode()) if isinstance(raw, str) else len(raw)
                    continue
                if kind == "reply.started":
                    self._reply(frame["message"]).started = arrived
                elif kind in ("reply.completed", "reply.failed"):
                    reply = self._reply(frame["message"]["id"])
                    reply.ended, reply.final = arrived, frame
                self.inbox.append((arrived, frame))
                self._arrived.set()
        except ConnectionClosed as closed:
            self.closed_with = str(closed)
        except Exception as error:  # a bug here must not hang the waiters
            self.closed_with = f"reader failed: {error!r}"
        finally:
            if self.closed_with is None:
                self.closed_with = "closed"
            self._arrived.set()

    def _reply(self, message: str) -> Reply:
        reply = self.replies.get(message)
        if reply is None:
            reply = self.replies[message] = Reply(message)
        return reply

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
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                self.ws.transport.abort()
        if self._reader is not None:
            self._reader.cancel()


@dataclass
class DirectStream:
    """One reply read straight from the model server (the baseline)."""

    requested: float
    pieces: list[Piece] = field(default_factory=list)
    ended: float | None = None

    @property
    def first_token(self) -> float:
        """Seconds from the request to the first content chunk."""
        return self.pieces[0][0] - self.requested if self.pieces else float("nan")


async def direct_stream(session: aiohttp.ClientSession, model_url: str, content: str, model: str,
                        timeout: float = 120) -> DirectStream:
    """POST a streamed chat completion and timestamp every content chunk as it arrives."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": True, "max_tokens": 8000}
    record = DirectStream(time.time())
    async with asyncio.timeout(timeout):
        async with session.post(model_url + "/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                arrived = time.time()
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    break
                for choice in json.loads(payload).get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        record.pieces.append((arrived, text))
    record.ended = time.time()
    return record


# --- what the stamps say -------------------------------------------------------------


def token_latencies(pieces: list[Piece]) -> list[float]:
    """Milliseconds from the model's send to the arrival here, one per stamped token."""
    out = []
    for arrived, text in pieces:
        now = int(arrived * 1_000_000) % STAMP_MODULO
        for match in STAMP.finditer(text):
            out.append(((now - int(match.group(1))) % STAMP_MODULO) / 1000)
    return out


def stamped_arrivals(pieces: list[Piece]) -> list[float]:
    """The arrival time of every stamped token (a coalesced delta gives several)."""
    return [arrived for arrived, text in pieces for _ in STAMP.finditer(text)]


def delivered_rate(pieces: list[Piece]) -> float:
    """Stamped tokens per second, from the model sending the first one to the last one arriving here.

    Counted from the model's side, so that a backlog the relay flushes late (in big
    coalesced deltas) lowers the rate instead of looking like a burst of speed."""
    arrivals = stamped_arrivals(pieces)
    latencies = token_latencies(pieces)
    if len(arrivals) < 2:
        return float("nan")
    first_sent = arrivals[0] - latencies[0] / 1000
    return (len(arrivals) - 1) / (arrivals[-1] - first_sent)


def seq_errors(seqs: list[int]) -> int:
    """Gaps and duplicates in a reply's delta numbers (0, 1, 2, ... expected)."""
    return sum(1 for i, seq in enumerate(seqs) if seq != i)
