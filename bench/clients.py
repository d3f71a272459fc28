"""The direct model reader (the baseline), and what the stamps of received tokens say.

The WebSocket side is `chat.client.tab.Tab`. Both timestamp what they receive with the
wall clock as soon as it arrives, so that a token stamped by the scripted model
(`#stamp`: its send time, µs modulo 10**9) gives its latency: arrival − stamp, on one
machine's clock.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp

from chat.client.tab import Piece
from tests.fake_model_server import STAMP, STAMP_MODULO


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
