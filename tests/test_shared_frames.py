"""A sidebar frame is framed and compressed once, and the same bytes go to every socket of
the user (chat/wire.py, config/shared_frames.py): raw clients see them byte for byte, a
client that keeps its compression context still reads every delta of a reply that such
frames cut into, and a client without compression gets the plain frame."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import zlib

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame
from websockets.streams import StreamReader

from chat.client.tab import Tab
from chat.wire import SharedText, deflate, frame
from tests.live_server import LiveServer


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_shared_frame_of_any_length_is_read_back_by_a_websocket_client(size, compressed):
    text = SharedText("".join(chr(0x41 + (i * 7919) % 26) if i % 11 else "é" for i in range(size)))
    reader = StreamReader()
    reader.feed_data(text.wire_bytes(compressed))
    reader.feed_eof()
    extension = PerMessageDeflate(False, False, 15, 15)  # a client that keeps its context
    parse = Frame.parse(reader.read_exact, mask=False, extensions=[extension] if compressed else [])
    with pytest.raises(StopIteration) as parsed:
        next(parse)
    got = parsed.value.value
    assert got.fin and got.rsv1 is False  # the extension took its bit when it inflated the payload
    assert got.data.decode() == text


def test_the_bytes_are_made_once_per_frame_not_per_socket():
    text = SharedText('{"type":"conversation.updated"}')
    assert text.wire_bytes(True) is text.wire_bytes(True)
    assert text.wire_bytes(False) is text.wire_bytes(False)
    assert text == '{"type":"conversation.updated"}' and json.loads(text)["type"] == "conversation.updated"


# --- On a real daphne ------------------------------------------------------------------

class RawSocket:
    """A WebSocket client written by hand, to see the server's frames byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.inflate = zlib.decompressobj(-15)  # one context for the socket's life, as a browser keeps it

    @classmethod
    async def open(cls, server: LiveServer, token: str, *, deflate: bool) -> RawSocket:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /ws/chat/ HTTP/1.1", f"Host: {server.host}:{server.port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                 f"Authorization: Bearer {token}"]
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)).decode()
        assert response.startswith("HTTP/1.1 101"), response
        assert ("permessage-deflate" in response) is deflate, response
        return cls(reader, writer)

    async def wire(self) -> tuple[bytes, bytes, dict]:
        """The next frame's exact bytes (header and payload as sent), its text, and its JSON."""
        head = await asyncio.wait_for(self.reader.readexactly(2), 15)
        assert head[0] & 0x0F == 0x1 and not head[1] & 0x80, "expected an unmasked text frame"
        size, extra = head[1] & 0x7F, b""
        if size == 126:
            extra = await self.reader.readexactly(2)
        elif size == 127:
            extra = await self.reader.readexactly(8)
        payload = await self.reader.readexactly(int.from_bytes(extra) if extra else size)
        text = self.inflate.decompress(payload + b"\x00\x00\xff\xff") if head[0] & 0x40 else payload
        return head + extra + payload, text, json.loads(text)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.mark.slow
async def test_every_socket_of_the_user_gets_the_same_bytes_for_a_sidebar_frame(live_alice):
    """Two sidebar frames in a row: the second comes within a burst, where a socket's own
    compressor would have been kept and would have compressed it against the first."""
    server, token = live_alice
    compressed = [await RawSocket.open(server, token, deflate=True) for _ in range(2)]
    plain = await RawSocket.open(server, token, deflate=False)
    sockets = [*compressed, plain]
    tab = await Tab.open(server.ws_url, token)
    try:
        for socket in sockets:
            assert (await socket.wire())[2]["type"] == "hello"
        await tab.send("message.send", conversation=None, content="hello there #tokens=3")
        created = (await tab.receive("conversation.created"))["conversation"]
        await tab.send("conversation.rename", conversation=created["id"], title="Renamed at once")
        for expected in ("conversation.created", "conversation.updated"):
            frames = [await socket.wire() for socket in sockets]
            assert [sidebar["type"] for _, _, sidebar in frames] == [expected] * 3
            (first, text, _), (second, _, _), (unpacked, plain_text, _) = frames
            assert first == second, "two sockets got different bytes for one frame"
            assert first == frame(deflate(text), compressed=True)
            assert unpacked == frame(plain_text, compressed=False) and plain_text == text
    finally:
        await tab.close()
        for socket in sockets:
            await socket.close()


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["deflate", None])
async def test_sidebar_frames_that_cut_into_a_reply_leave_every_delta_readable(live_alice, compression):
    """The reader keeps its compression context through the reply; the sidebar frames come
    from another compressor, and the socket's own must start afresh after each of them."""
    server, token = live_alice
    reader = Tab(server.ws_url, token=token, keep_deltas=True, compress=compression is not None)
    writer = await Tab.open(server.ws_url, token)
    await reader.connect()
    try:
        await reader.send("message.send", conversation=None, content="long one #tokens=300 #delay=0.005 #markdown")
        started = await reader.receive("reply.started")
        await reader.receive("reply.delta")
        titles = []
        for n in range(6):
            await writer.send("message.send", conversation=None, content=f"short {n} #tokens=2")
            titles.append((await writer.receive("conversation.created"))["conversation"]["id"])
            await writer.receive("reply.completed")
        first, _, _ = await reader.wait("reply.delta")
        last, _, final = await reader.wait("reply.completed", timeout=60)
        sidebar = {f["conversation"]["id"]: i for i, (_, f) in enumerate(reader.inbox)
                   if f["type"] == "conversation.created"}
        cut_in = [c for c in titles if first < sidebar.get(c, -1) < last]
        assert cut_in, "no sidebar frame came while the reply streamed: the test shows nothing"
        assert set(titles) <= set(sidebar)
        reply = reader.replies[started["message"]]
        assert reply.seqs == list(range(len(reply.seqs)))
        assert "".join(text for _, text in reply.deltas) == final["message"]["content"]
    finally:
        await reader.close()
        await writer.close()
