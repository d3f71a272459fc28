"""daphne's `chat.write_text` scope extension (config/frame_writer.py): a WebSocket
application gets a writer that does what daphne does with a text `websocket.send`, and
the chat consumer sends its frames through it where it is offered."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from daphne.server import Server

from chat.wire import WRITE_TEXT, text_writer
from config import frame_writer


class Protocol:
    """What the writer uses of daphne's WebSocket protocol."""

    STATE_CONNECTING, STATE_OPEN = 0, 1

    def __init__(self) -> None:
        self.state = self.STATE_OPEN
        self.sent: list[tuple[str, bool]] = []

    def serverSend(self, content, binary=False):  # noqa: N802 (daphne's name)
        self.sent.append((content, binary))


async def _scope_of(scope_type: str) -> tuple[dict, Server, Protocol]:
    frame_writer.install()
    seen = {}

    async def application(scope, receive, send):
        seen["scope"] = scope

    server = Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"])  # never started
    protocol = Protocol()
    server.connections = {protocol: {}}
    server.create_application(protocol, {"type": scope_type})
    await asyncio.sleep(0)  # the application runs as a task of its own
    await server.connections[protocol]["application_instance"]
    return seen["scope"], server, protocol


async def test_a_websocket_application_gets_a_writer_that_sends_text_as_daphne_would():
    scope, server, protocol = await _scope_of("websocket")
    write = text_writer(scope)
    assert write is not None and WRITE_TEXT in scope["extensions"]
    write('{"type":"pong"}')
    assert protocol.sent == [('{"type":"pong"}', False)]


async def test_the_writer_sends_nothing_once_the_connection_is_gone():
    scope, server, protocol = await _scope_of("websocket")
    server.connections[protocol]["disconnected"] = True
    text_writer(scope)("late")
    del server.connections[protocol]
    text_writer(scope)("later")
    assert protocol.sent == []


async def test_the_writer_refuses_a_socket_not_yet_accepted():
    scope, server, protocol = await _scope_of("websocket")
    protocol.state = protocol.STATE_CONNECTING
    with pytest.raises(ValueError, match="not been accepted"):
        text_writer(scope)("too soon")
    assert protocol.sent == []


async def test_http_requests_get_no_writer():
    scope, _, _ = await _scope_of("http")
    assert text_writer(scope) is None


@pytest.mark.django_db(transaction=True)
async def test_the_consumer_writes_its_frames_through_the_writer(make_user):
    """The hello and the answer to a ping go out by the writer; ASGI's `send` only accepts."""
    from tests.sockets import _communicator

    written: list[str] = []
    ponged = asyncio.Event()

    def write(text: str) -> None:
        written.append(text)
        if '"pong"' in text:
            ponged.set()

    user = await sync_to_async(make_user)()
    communicator = await _communicator(user, b"http://localhost", ())
    communicator.scope["extensions"] = {WRITE_TEXT: {"write": write}}  # read when the socket connects
    connected, _ = await communicator.connect()
    assert connected
    try:
        await communicator.send_to(text_data='{"type": "ping", "ref": "r1"}')
        await asyncio.wait_for(ponged.wait(), 10)
        assert '"type":"hello"' in written[0]
        assert await communicator.receive_nothing(0.05), "a frame went out through ASGI's send"
    finally:
        await communicator.disconnect()
