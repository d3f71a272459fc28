"""permessage-deflate on a real daphne (config/compression.py): negotiated with small
windows when the client offers it, off with CHAT_WEBSOCKET_COMPRESSION=0, a reply's
deltas many times smaller on the wire and still exactly the reply, and a compressed
message that would inflate past the bound closes the socket instead of filling memory."""
from __future__ import annotations

import json

import pytest
import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate

from chat.client.tab import Tab
from config import compression
from tests.live_server import started_with_alice

pytestmark = pytest.mark.slow


def _live(tmp_path, fake_model, **extra):
    return started_with_alice(tmp_path, fake_model.url, **extra)


@pytest.fixture(scope="module")
def live(tmp_path_factory, fake_model):
    server, token = _live(tmp_path_factory.mktemp("compressed"), fake_model)
    yield server, token
    server.stop()


def _deflate(connection) -> PerMessageDeflate | None:
    return next((e for e in connection.protocol.extensions if isinstance(e, PerMessageDeflate)), None)


async def test_a_client_that_offers_deflate_gets_it_with_small_windows(live):
    server, token = live
    async with websockets.connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        deflate = _deflate(ws)
        assert deflate is not None, "permessage-deflate was not negotiated"
        assert deflate.local_max_window_bits == compression.CLIENT_WINDOW_BITS
        assert deflate.local_no_context_takeover  # the client starts each message afresh


async def test_a_client_that_does_not_offer_it_gets_plain_frames(live):
    server, token = live
    async with websockets.connect(server.ws_url, compression=None,
                                  additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        assert _deflate(ws) is None


async def test_deltas_are_many_times_smaller_on_the_wire_and_add_up_to_the_reply(live):
    server, token = live
    tab = Tab(server.ws_url, token=token, count_bytes=True)
    await tab.connect()
    try:
        await tab.send("message.send", conversation=None, content="long #tokens=400 #delay=0.003 #markdown")
        conversation = (await tab.receive("conversation.created"))["conversation"]["id"]
        assert conversation
        _, _, final = await tab.wait("reply.completed", timeout=60)
        reply = tab.replies[final["message"]["id"]]
        assert "".join(text for _, text in reply.deltas) == final["message"]["content"]
        html = len(final["message"]["html"].encode())
        assert reply.delta_bytes / html > 10, "the JSON of the deltas should be many times the final HTML"
        assert reply.delta_wire_bytes * 4 < reply.delta_bytes, (reply.delta_wire_bytes, reply.delta_bytes)
    finally:
        await tab.close()


async def test_a_message_that_inflates_past_the_bound_closes_the_socket_and_nothing_else(live):
    server, token = live
    headers = {"Authorization": f"Bearer {token}"}
    ws = await websockets.connect(server.ws_url, additional_headers=headers)
    assert json.loads(await ws.recv())["type"] == "hello"
    # A few KB on the wire, 5 MiB once inflated.
    await ws.send(json.dumps({"type": "message.send", "conversation": None,
                              "content": "a" * (compression.MAX_DECOMPRESSED_BYTES + 1024 * 1024)}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # The server goes on: a new socket works.
    async with websockets.connect(server.ws_url, additional_headers=headers) as again:
        assert json.loads(await again.recv())["type"] == "hello"
        await again.send(json.dumps({"type": "ping", "ref": "after"}))
        assert json.loads(await again.recv()) == {"type": "pong", "ref": "after"}


def test_the_server_compresses_with_a_small_window_and_memory_level():
    from autobahn.websocket.compress import PerMessageDeflate as Server
    from autobahn.websocket.compress import PerMessageDeflateOffer

    offer = PerMessageDeflateOffer(accept_no_context_takeover=True, accept_max_window_bits=True)
    pmce = Server.create_from_offer_accept(True, compression.accept([offer]))
    assert (pmce.server_max_window_bits, pmce.mem_level) == (compression.WINDOW_BITS, compression.MEM_LEVEL)
    assert pmce.client_no_context_takeover and pmce.client_max_window_bits == compression.CLIENT_WINDOW_BITS
    assert pmce.max_message_size == compression.MAX_DECOMPRESSED_BYTES
    # A client that asks for an even smaller server window gets it.
    small = PerMessageDeflateOffer(accept_max_window_bits=True, request_max_window_bits=9)
    assert Server.create_from_offer_accept(True, compression.accept([small])).server_max_window_bits == 9


def test_compression_off_negotiates_nothing(tmp_path, fake_model):
    import asyncio

    server, token = _live(tmp_path, fake_model, CHAT_WEBSOCKET_COMPRESSION="0")
    try:
        async def offer():
            async with websockets.connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
                return _deflate(ws)

        assert asyncio.run(offer()) is None
    finally:
        server.stop()


def _burst_deflate():
    from autobahn.websocket.compress import PerMessageDeflate, PerMessageDeflateOffer

    offer = PerMessageDeflateOffer(accept_no_context_takeover=True, accept_max_window_bits=True)
    return compression._burst_deflate_class(PerMessageDeflate).create_from_offer_accept(True, compression.accept([offer]))


def _compress(deflate, text: bytes) -> bytes:
    deflate.start_compress_message()
    return deflate.compress_message_data(text) + deflate.end_compress_message()


def test_an_isolated_message_leaves_no_compressor_and_a_burst_keeps_one_until_quiet(monkeypatch):
    import time
    import zlib

    monkeypatch.setattr(compression, "_schedule", lambda: None)  # no reactor here: the sweep is called below
    deflate = _burst_deflate()
    client = zlib.decompressobj(-15)  # a browser's: one context for the whole socket
    frame = json.dumps({"type": "reply.delta", "conversation": "c" * 32, "message": "m" * 16, "delta": " word"}).encode()
    sent = []

    def send(text: bytes) -> int:
        data = _compress(deflate, text)
        sent.append(client.decompress(data + b"\x00\x00\xff\xff"))
        return len(data)

    send(b'{"type":"hello","conversations":[]}')
    assert deflate._compressor is None, "a socket that only got its hello holds no compressor"
    first = send(frame)  # right after hello: a burst starts, and its compressor is kept
    assert deflate._compressor is not None
    repeated = send(frame)
    assert repeated < first / 3, "inside a burst, a frame refers to the one before it"
    deflate.release_if_idle(time.monotonic())
    assert deflate._compressor is not None, "not quiet long enough yet"
    deflate._last_end -= compression.IDLE_SECONDS
    compression._sweep()
    assert deflate._compressor is None
    deflate._last_end -= compression.BURST_SECONDS
    send(frame)  # after the quiet: a fresh compressor, which the client's old context still reads
    assert deflate._compressor is None
    assert sent == [b'{"type":"hello","conversations":[]}', frame, frame, frame]


def test_the_decompressor_of_a_client_without_context_is_dropped_after_each_message():
    import zlib

    deflate = _burst_deflate()
    assert deflate.client_no_context_takeover
    packer = zlib.compressobj(6, zlib.DEFLATED, -compression.CLIENT_WINDOW_BITS)
    data = packer.compress(b'{"type":"ping"}') + packer.flush(zlib.Z_SYNC_FLUSH)
    deflate.start_decompress_message()
    assert deflate.decompress_message_data(data[:-4]) == b'{"type":"ping"}'
    deflate.end_decompress_message()
    assert deflate._decompressor is None
