"""The model's chunked response body read off the connection (chat/backends/chunked_body.py):
the payload exactly as h11 would give it, however the bytes are split into reads, and h11
left where the real body would leave it, so that the connection is reused only when the
body ended cleanly."""
from __future__ import annotations

import asyncio
import contextlib

import h11
import httpx2
import pytest

from chat.backends import HFBackend, chunked_body
from chat.backends.chunked_body import ChunkedBody

HEADERS = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(*pieces: bytes, trailer: bytes = b"\r\n") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer


class Reads:
    """A network stream that returns the given reads, then the end of the connection."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.reads.pop(0) if self.reads else b""


def h11_after_headers(held: bytes) -> h11.Connection:
    """A client connection that sent its request and parsed the response's headers,
    holding `held` (body bytes that came with them)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/v1/chat/completions", headers=[("host", "model")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(HEADERS + held)
    assert isinstance(conn.next_event(), h11.Response)
    return conn


async def read_all(body: bytes, cuts: list[int]) -> tuple[bytes, h11.Connection, ChunkedBody]:
    """Read `body` split at `cuts`: the first piece held by h11, the others read one by one."""
    bounds = [0, *cuts, len(body)]
    pieces = [body[a:b] for a, b in zip(bounds, bounds[1:])]
    conn = h11_after_headers(pieces[0])
    reader = ChunkedBody(Reads([p for p in pieces[1:] if p]), conn, conn.trailing_data[0], None)
    payload = b"".join([piece async for piece in reader])
    return payload, conn, reader


BODY = chunked(b"data: {\"a\": 1}\n\n", b"data: {\"b\": 22}\n\n", b"x" * 300, b"data: [DONE]\n\n")
PAYLOAD = b"data: {\"a\": 1}\n\ndata: {\"b\": 22}\n\n" + b"x" * 300 + b"data: [DONE]\n\n"


async def test_payload_is_whole_and_h11_done_whatever_the_split():
    # Every split point, with what came along with the headers anywhere from nothing to all of it.
    for first in range(len(BODY) + 1):
        for second in (None, *range(first, len(BODY) + 1, 7)):
            cuts = [first] if second is None else [first, second]
            payload, conn, reader = await read_all(BODY, cuts)
            assert payload == PAYLOAD, cuts
            assert reader.ended and conn.their_state is h11.DONE and conn.our_state is h11.DONE, cuts
            conn.start_next_cycle()  # what httpcore2 does before reusing the connection
            assert conn.their_state is h11.IDLE and conn.trailing_data == (b"", False)


async def test_byte_by_byte_reads():
    payload, conn, _ = await read_all(BODY, list(range(1, len(BODY))))
    assert payload == PAYLOAD and conn.their_state is h11.DONE


async def test_chunk_extensions_trailers_and_hex_case_are_accepted():
    body = b"1A;name=value\r\n" + b"y" * 26 + b"\r\n" + b"0;last\r\nx-checksum: abc\r\nx-more: 1\r\n\r\n"
    for cut in range(len(body) + 1):
        payload, conn, _ = await read_all(body, [cut])
        assert payload == b"y" * 26 and conn.their_state is h11.DONE


@pytest.mark.parametrize(("body", "words"), [
    (b"zz\r\nabc\r\n0\r\n\r\n", "illegal chunk header"),
    (b"3\r\nabcXY0\r\n\r\n", "malformed chunk footer"),
    (b"3\r\nab", "incomplete chunked read"),
    (b"5\r\nhello\r\n", "incomplete chunked read"),
    (b"\r\n" + b"1" * 30 + b"\r\n", "illegal chunk header"),
    (b"f" * 5000, "chunk header too long"),
])
async def test_malformed_or_cut_body_raises_and_leaves_h11_unfinished(body, words):
    conn = h11_after_headers(b"")
    reader = ChunkedBody(Reads([body]), conn, b"", None)
    with pytest.raises(httpx2.RemoteProtocolError, match=words):
        async for _ in reader:
            pass
    assert conn.their_state is h11.SEND_BODY  # httpcore2 closes such a connection


async def test_bytes_after_the_body_leave_h11_unfinished():
    payload, conn, reader = await read_all(chunked(b"abc") + b"HTTP/1.1 200 OK\r\n", [5])
    assert payload == b"abc" and reader.ended
    assert conn.their_state is h11.SEND_BODY


async def test_read_errors_are_httpx2_errors():
    import httpcore2

    class Failing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            raise self.error

    for error, expected in ((httpcore2.ReadTimeout("slow"), httpx2.ReadTimeout),
                            (httpcore2.ReadError("reset"), httpx2.ReadError)):
        reader = ChunkedBody(Failing(error), h11_after_headers(b""), b"", None)
        with pytest.raises(expected):
            async for _ in reader:
                pass


def test_a_response_not_on_httpcore2s_connection_is_left_to_httpx2():
    # E.g. a mocked transport, or httpx2/httpcore2 internals moved by an upgrade.
    response = httpx2.Response(200, headers={"transfer-encoding": "chunked"}, content=b"data: [DONE]\n\n")
    assert chunked_body.for_response(response) is None


# --- Through the backend, against a server that writes exact bytes ---------------------------

def sse(*contents: str, finish: bool = True) -> bytes:
    import json

    events = [b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": c}}]}).encode() + b"\n\n"
              for c in contents]
    if finish:
        events.append(b"data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                      .encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


class RawServer:
    """An HTTP/1.1 server that answers each request with `script(n)`: a list of writes
    (bytes; a float: pause; None: close the connection), counting connections."""

    def __init__(self, script) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                for write in self.script(self.requests):
                    if write is None:  # close the connection here
                        return
                    if isinstance(write, float):
                        await writer.drain()
                        await asyncio.sleep(write)
                    else:
                        writer.write(write)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def backend(settings):
    settings.HF_TOKEN = "dummy-token"
    settings.HF_PROVIDER = ""
    settings.HF_MODELS = ["fake/raw"]
    settings.HF_TIMEOUT = 5.0
    return HFBackend(retry_budget=0.5, first_backoff=0.05)


async def pieces_of(backend: HFBackend) -> list[str]:
    return [piece async for piece in backend.stream("fake/raw", [{"role": "user", "content": "hi"}], max_tokens=8)]


@pytest.mark.parametrize("split", ["headers alone", "with the whole body", "mid-chunk", "mid-size-line"])
async def test_backend_reads_direct_and_reuses_the_connection(backend, settings, monkeypatch, split):
    body = chunked(*(sse("Hel", "lo", " there").split(b"\n\n")[i] + b"\n\n" for i in range(5)))
    at = {"headers alone": 0, "with the whole body": len(body), "mid-chunk": 9, "mid-size-line": 1}[split]
    used = []
    real = chunked_body.for_response
    monkeypatch.setattr(chunked_body, "for_response", lambda response: used.append(real(response)) or used[-1])

    async with RawServer(lambda n: [HEADERS + body[:at], 0.02, body[at:]]) as server:
        settings.HF_BASE_URL = server.url
        try:
            assert await pieces_of(backend) == ["Hel", "lo", " there"]
            assert await pieces_of(backend) == ["Hel", "lo", " there"]
        finally:
            await backend.aclose()
    assert len(used) == 2 and all(isinstance(reader, ChunkedBody) and reader.ended for reader in used)
    assert server.requests == 2 and server.connections == 1


@pytest.mark.parametrize("headers", [
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
])
async def test_other_bodies_are_read_by_httpx2(backend, settings, monkeypatch, headers):
    import gzip

    payload = sse("a", "b")
    if b"gzip" in headers:
        data = gzip.compress(payload)
        body = chunked(data[:10], data[10:])
    else:
        body = payload
        headers = headers % len(body)
    used = []
    real = chunked_body.for_response
    monkeypatch.setattr(chunked_body, "for_response", lambda response: used.append(real(response)) or used[-1])
    async with RawServer(lambda n: [headers + body]) as server:
        settings.HF_BASE_URL = server.url
        try:
            assert await pieces_of(backend) == ["a", "b"]
            assert await pieces_of(backend) == ["a", "b"]
        finally:
            await backend.aclose()
    assert used == [None, None] and server.connections == 1


@pytest.mark.parametrize(("closed", "message"), [(True, "CUT_MESSAGE"), (False, "TIMEOUT_MESSAGE")])
async def test_a_body_cut_mid_chunk_fails_the_reply_and_its_connection_is_not_reused(backend, settings, closed,
                                                                                       message):
    from chat import backends

    body = chunked(sse("one", "two", finish=False))
    cut = [HEADERS + body[:40]] + ([None] if closed else [])
    async with RawServer(lambda n: cut if n == 1 else [HEADERS + chunked(sse("ok"))]) as server:
        settings.HF_BASE_URL = server.url
        settings.HF_TIMEOUT = 0.3  # a server that keeps the connection open after the cut: the read times out
        try:
            with pytest.raises(backends.ModelError) as failure:
                await pieces_of(backend)
            assert failure.value.message == getattr(backends, message)
            assert await pieces_of(backend) == ["ok"]
        finally:
            await backend.aclose()
    assert server.requests == 2 and server.connections == 2
