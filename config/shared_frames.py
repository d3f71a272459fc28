"""daphne writes a `SharedText` frame's prepared bytes (chat/wire.py) instead of framing it
and compressing it again for every socket.

A socket with permessage-deflate usually keeps its compressor through a burst of
messages (config/compression.py). The shared bytes came from another compressor, so
the client's decompressor now holds a message that the socket's own compressor never
saw: that compressor is dropped, and the socket's next message starts a new one. A
reply's next delta compresses a little worse; nothing else changes.

Frames are written this way only on an open socket that is not in the middle of a
fragmented message; anything else goes daphne's usual way. `install` must run before
config/backpressure.py's, so that the buffer bound is checked first for these frames too.
"""
from __future__ import annotations

from chat.wire import SharedText


def write_shared(protocol, text: SharedText) -> bool:
    """Write `text`'s prepared bytes on an autobahn server protocol; False if it cannot
    take them now (not open, or mid-way through a fragmented message)."""
    if protocol.state != protocol.STATE_OPEN or protocol.send_state != protocol.SEND_STATE_GROUND:
        return False
    deflate_state = protocol._perMessageCompress
    if deflate_state is None:
        protocol.sendData(text.wire_bytes(False))
        return True
    # The client's history now holds this message and the socket's compressor's does not.
    deflate_state._compressor = None
    protocol.sendData(text.wire_bytes(True))
    return True


def install() -> None:
    """Make daphne's WebSocket protocol write a `SharedText`'s prepared bytes (idempotent)."""
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol, "_writes_shared_frames", False):
        return
    send = WebSocketProtocol.serverSend
    if getattr(send, "bounded", False):
        raise RuntimeError("install shared frames before config.backpressure: its bound must be checked first")

    def serverSend(self, content, binary=False):
        if type(content) is SharedText and not binary and write_shared(self, content):
            return None
        return send(self, content, binary)

    WebSocketProtocol.serverSend = serverSend
    WebSocketProtocol._writes_shared_frames = True
