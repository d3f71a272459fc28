"""permessage-deflate (RFC 7692) on daphne's WebSockets, with small windows.

Why: a streamed reply is many small `reply.delta` frames, and most of each frame is the
same as the one before it (the envelope, the conversation and message ids, the tail of
the paragraph being written). Uncompressed, one tab receives 14–52 bytes per byte of the
reply's final HTML; compressed with context takeover it receives about 1–4 (see
docs/benchmarks.md), which is what a phone on a slow network feels. Every browser and
the `websockets` library offer the extension; daphne never accepts it, so `install`
makes its factory accept it.

The costs, chosen to stay small:
- memory: a 1 KiB window (`window_bits` 10) and `mem_level` 2 keep the server's
  compressor of a socket at about 12 KB (zlib's defaults: about 260 KB). The context
  of a reply's previous frame is well within 1 KiB, so the ratio barely changes. (A
  compressor with a smaller window than the client's decompressor is always valid;
  autobahn does not announce it in `server_max_window_bits`, so the client keeps its
  default window, which costs the client only.)
- client → server: the client is asked not to keep its context between messages
  (`client_no_context_takeover`) and to use a 512-byte window: its frames are few and
  small, and so the server's decompressor holds almost nothing between them.
- decompression bombs: a compressed message may expand to at most
  `MAX_DECOMPRESSED_BYTES`; past that autobahn closes the socket with 1009. Below it,
  config/backpressure.py answers anything over the frame limit with `too_large` and
  keeps none of it, as for an uncompressed frame.
- CPU: about 10 µs per frame per socket (zlib level 6 on a few hundred bytes).
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

WINDOW_BITS = 10  # server → client: 1 KiB of history (RFC 7692 allows 8–15; autobahn 9–15)
MEM_LEVEL = 2  # zlib's hash table and buffers: 1–9; 2 keeps the compressor at about 12 KB
CLIENT_WINDOW_BITS = 9  # client → server, where the client accepts a limit (browsers do)
MAX_DECOMPRESSED_BYTES = 4 * 1024 * 1024


def accept(offers: list):
    """The answer to a client's permessage-deflate offers: the first deflate offer,
    with small windows, or None (no compression) when there is none."""
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    for offer in offers:
        if not isinstance(offer, PerMessageDeflateOffer):
            continue
        window = min(WINDOW_BITS, offer.request_max_window_bits or WINDOW_BITS)
        return PerMessageDeflateOfferAccept(
            offer,
            request_no_context_takeover=offer.accept_no_context_takeover,
            request_max_window_bits=CLIENT_WINDOW_BITS if offer.accept_max_window_bits else 0,
            window_bits=max(window, 9),
            mem_level=MEM_LEVEL,
            max_message_size=MAX_DECOMPRESSED_BYTES,
        )
    return None


def install() -> None:
    """Make daphne's WebSocket factory accept permessage-deflate (idempotent).

    daphne builds its factory itself and sets only its own options on it, so the
    acceptance is added where autobahn resets a factory's options."""
    from daphne.ws_protocol import WebSocketFactory

    if getattr(WebSocketFactory.resetProtocolOptions, "compressing", False):
        return
    reset = WebSocketFactory.resetProtocolOptions

    def resetProtocolOptions(self):
        reset(self)
        self.perMessageCompressionAccept = accept
        # A socket failed for a message over the bound gets a close frame with 1009 and
        # the reason, not a dropped TCP connection that looks like a network fault.
        self.failByDrop = False

    resetProtocolOptions.compressing = True
    WebSocketFactory.resetProtocolOptions = resetProtocolOptions
