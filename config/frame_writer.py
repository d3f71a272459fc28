"""daphne lets the chat consumer write text frames with a plain call, not ASGI's `send`.

Why: ASGI's `send` is a chain of coroutines: Channels' consumer `send`, its session and
cookie wrappers, daphne's `handle_reply`, then the protocol's dispatch on the message's
type, before the frame reaches autobahn. Per frame and per socket that chain cost about
as much as autobahn's framing and the write together (py-spy, bench §1); with a delta
per token, and a sidebar frame for each of a user's tabs, it was a large share of the
relay's CPU (issue 14).

`install` makes daphne offer every WebSocket application the scope extension
`chat.write_text` (chat/wire.py): a function that does what daphne does with a
`websocket.send` of text — nothing once the connection is gone, an error before the
socket is accepted, else the protocol's `serverSend`, where config/backpressure.py
bounds what a slow client holds — without the chain. Accepting, closing and bytes still
go through `send`. Either way the frame is on its way to the transport when the call
returns (the chain never waits on anything), so frames keep the order in which the
consumer sent them. Where there is no such extension (another server, Channels' test
communicator) the consumer sends everything through `send`.
"""
from __future__ import annotations

from functools import partial

from chat.wire import WRITE_TEXT


def write_text(server, protocol, text: str) -> None:
    """daphne's handling of `{"type": "websocket.send", "text": text}`, called directly."""
    connection = server.connections.get(protocol)
    if connection is None or connection.get("disconnected"):
        return
    if protocol.state == protocol.STATE_CONNECTING:
        raise ValueError("Socket has not been accepted, so cannot send over it")
    protocol.serverSend(text, False)


def install() -> None:
    """Make daphne put the writer into every WebSocket scope (idempotent)."""
    from daphne.server import Server

    if getattr(Server.create_application, "offers_write_text", False):
        return
    create = Server.create_application

    def create_application(self, protocol, scope):
        if scope.get("type") == "websocket":
            scope["extensions"] = {**(scope.get("extensions") or {}), WRITE_TEXT: {"write": partial(write_text, self, protocol)}}
        return create(self, protocol, scope)

    create_application.offers_write_text = True
    Server.create_application = create_application
