"""Bound what daphne buffers for a WebSocket client: one that stops reading (`install`),
and one that sends a message larger than the protocol allows (`limit_incoming`).

ASGI's `send` has no backpressure: daphne hands every frame to Twisted, whose
transport buffers it in memory until the kernel takes it (daphne#170). A client
that stops reading — a frozen tab, a stalled phone, a hostile script — would make
the server hold every later frame forever. Before each frame we look at what the
transport still holds; past `CHAT_MAX_SOCKET_BUFFER_BYTES` the connection is
aborted, which frees the buffer and tells the app the socket is gone. The page
reconnects and resynchronises from `conversation.state`, so nothing is lost.
"""
from __future__ import annotations

import logging

from config.transport import held_bytes

logger = logging.getLogger(__name__)


def pending_bytes(transport) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken yet (with those that
    config/transport.py holds until the end of the loop's turn)."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return max(buffered, 0) + getattr(transport, "_tempDataLen", 0) + held_bytes(transport)


def install(limit: int) -> None:
    """Wrap daphne's frame sending with the buffer check (idempotent)."""
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol.serverSend, "bounded", False):
        return
    send_unbounded = WebSocketProtocol.serverSend

    def serverSend(self, content, binary=False):
        transport = getattr(self, "transport", None)
        if transport is not None and pending_bytes(transport) > limit:
            if not getattr(self, "slow_client_aborted", False):
                self.slow_client_aborted = True
                logger.warning("socket closed: client stopped reading", extra={"client": self.client_addr,
                                                                                "buffered": pending_bytes(transport)})
                transport.abortConnection()
            return
        return send_unbounded(self, content, binary)

    serverSend.bounded = True
    WebSocketProtocol.serverSend = serverSend


def limit_incoming(max_bytes: int) -> None:
    """Answer a client message over `max_bytes` with the protocol's `too_large` error and
    keep the socket open, holding none of it (idempotent).

    daphne tells autobahn to fail the connection on a message or frame over 1 MiB
    (close 1009/1008, no error frame), and buffers everything below that. Here the
    message is read to its end but only its first `max_bytes` are kept; past them the
    rest is dropped as it arrives, and the client gets the documented error instead of
    the message, exactly as the consumer answers a frame over the limit it can see.
    """
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol.onMessageFrameBegin, "limited", False):
        return
    frame_begin, frame_data, message_end = (WebSocketProtocol.onMessageFrameBegin,
                                            WebSocketProtocol.onMessageFrameData, WebSocketProtocol.onMessageEnd)

    def onMessageFrameBegin(self, length):
        self.maxMessagePayloadSize = self.maxFramePayloadSize = 0  # enforced below instead, without a close
        frame_begin(self, length)

    def onMessageFrameData(self, payload):
        if self.message_data_total_length <= max_bytes:
            frame_data(self, payload)

    def onMessageEnd(self):
        if self.message_data_total_length <= max_bytes:
            return message_end(self)
        from chat import events, protocol

        self.message_data, self.frame_data = [], []
        logger.debug("frame over the limit refused", extra={"client": self.client_addr,
                                                            "bytes": self.message_data_total_length})
        self.serverSend(events.encode(protocol.error("too_large", f"Frames are limited to {max_bytes} bytes.")))

    onMessageFrameBegin.limited = True
    WebSocketProtocol.onMessageFrameBegin = onMessageFrameBegin
    WebSocketProtocol.onMessageFrameData = onMessageFrameData
    WebSocketProtocol.onMessageEnd = onMessageEnd
