"""Bound what daphne buffers for a WebSocket client that stops reading.

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

logger = logging.getLogger(__name__)


def pending_bytes(transport) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken yet."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return max(buffered, 0) + getattr(transport, "_tempDataLen", 0)


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
