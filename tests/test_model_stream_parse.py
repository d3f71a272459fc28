"""The Hugging Face backend reads the server's event stream itself (chat/backends/remote.py
`_events`): what servers really send must come out as it did through huggingface_hub.

A server of the test's own on loopback writes the bytes exactly as scripted: lines cut
anywhere (inside a JSON object, inside a multi-byte character), CRLF line ends, SSE
comments and `event:` lines, a gzip-compressed body.
"""
from __future__ import annotations

import asyncio
import json
import zlib

import pytest
from aiohttp import web

from chat.backends import HFBackend, ModelError

MODEL = "raw/model"


def chunk(content: str | None = None, finish: str | None = None, role: bool = False) -> bytes:
    delta = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


class RawServer:
    """Answers every POST with `self.body`, written in `self.pieces` parts, optionally gzipped."""

    def __init__(self) -> None:
        self.body = b""
        self.pieces = 1
        self.gzip = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        body = self.body
        if self.gzip:
            response.headers["Content-Encoding"] = "gzip"
            packer = zlib.compressobj(wbits=31)
            body = packer.compress(body) + packer.flush()
        await response.prepare(request)
        size = max(1, -(-len(body) // self.pieces))
        for start in range(0, len(body), size):
            await response.write(body[start:start + size])
            await asyncio.sleep(0.002)  # each part its own read on the client
        await response.write_eof()
        return response


@pytest.fixture
async def raw(settings):
    server = RawServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    settings.HF_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.HF_TOKEN = ""
    backend = HFBackend(retry_budget=0.5, first_backoff=0.05)
    yield server, backend
    await backend.aclose()
    await runner.cleanup()


async def read(backend: HFBackend) -> tuple[list[str], str | None]:
    stream = backend.stream(MODEL, [{"role": "user", "content": "hi"}], max_tokens=50)
    pieces = [piece async for piece in stream]
    return pieces, stream.finish_reason


WORDS = ["Grüße", " 👋🏽", " and", " ünïcödé", " done."]
STREAM = (b": keep-alive comment\n\n" + chunk(role=True) + b"event: message\n"
          + b"".join(chunk(word) for word in WORDS) + chunk(finish="stop") + b"data: [DONE]\n\n")


@pytest.mark.parametrize("pieces", [1, 7, len(STREAM)], ids=["whole", "seven-parts", "byte-by-byte"])
async def test_pieces_come_out_whole_however_the_bytes_are_cut(raw, pieces):
    server, backend = raw
    server.body, server.pieces = STREAM, pieces
    assert await read(backend) == (WORDS, "stop")


async def test_crlf_line_ends_and_a_gzipped_body_read_the_same(raw):
    server, backend = raw
    server.body, server.gzip, server.pieces = STREAM.replace(b"\n", b"\r\n"), True, 5
    assert await read(backend) == (WORDS, "stop")


async def test_nothing_after_done_is_read_as_a_piece(raw):
    server, backend = raw
    server.body = chunk("only", finish="length") + b"data: [DONE]\n\n" + chunk("after the end")
    assert await read(backend) == (["only"], "length")


async def test_an_error_event_fails_the_reply_as_the_hub_would(raw):
    server, backend = raw
    server.body = chunk("partial") + b'data: {"error": "the model is overloaded", "error_type": "overloaded"}\n\n'
    stream = backend.stream(MODEL, [{"role": "user", "content": "hi"}], max_tokens=50)
    seen = []
    with pytest.raises(ModelError) as failure:
        async for piece in stream:
            seen.append(piece)
    assert seen == ["partial"]
    assert failure.value.code == "model_failed" and "overloaded" in failure.value.message


async def test_a_chunk_that_is_not_json_fails_the_reply(raw):
    server, backend = raw
    server.body = chunk("partial") + b"data: {not json\n\n"
    with pytest.raises(ModelError) as failure:
        await read(backend)
    assert failure.value.code == "model_failed"


async def test_a_body_that_ends_without_finish_reason_is_a_cut_reply(raw):
    server, backend = raw
    server.body = chunk("half")  # the connection ends: no finish_reason, no [DONE]
    with pytest.raises(ModelError) as failure:
        await read(backend)
    assert failure.value.code == "model_failed"
