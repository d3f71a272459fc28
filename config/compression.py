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
- idle sockets: the compressor is kept only across a burst of messages (a streamed
  reply, a run of sidebar news). A message that does not follow another within
  `BURST_SECONDS` is compressed by a compressor made for it and dropped after it; one
  kept through a burst is dropped once the socket has been quiet for `IDLE_SECONDS`
  (a sweep every `SWEEP_SECONDS`). A new compressor's output refers to nothing sent
  before, which the client's decompressor always accepts (RFC 7692 §7.2.1: context
  takeover is the compressor's choice). So a socket that only got its `hello` holds
  no compressor at all: 11 KB of its 54 (bench §4). The decompressor of a client that
  accepted `client_no_context_takeover` is made anew for each message by autobahn;
  it is dropped right after the message instead of after the next one.
"""
from __future__ import annotations

import logging
import time
import weakref

logger = logging.getLogger(__name__)

WINDOW_BITS = 10  # server → client: 1 KiB of history (RFC 7692 allows 8–15; autobahn 9–15)
MEM_LEVEL = 2  # zlib's hash table and buffers: 1–9; 2 keeps the compressor at about 12 KB
CLIENT_WINDOW_BITS = 9  # client → server, where the client accepts a limit (browsers do)
MAX_DECOMPRESSED_BYTES = 4 * 1024 * 1024
BURST_SECONDS = 1.0  # a message this soon after the previous one keeps the compressor
IDLE_SECONDS = 10.0  # a kept compressor is dropped after this long without a message
SWEEP_SECONDS = 5.0


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


_live: weakref.WeakSet = weakref.WeakSet()  # server-side compressors' owners, for the sweep
_sweeping = False


def _burst_deflate_class(base: type) -> type:
    """autobahn's server-side permessage-deflate, keeping its compressor only through bursts."""

    class BurstDeflate(base):
        # In slots, not in the instance's dict: these three keys made autobahn's object
        # grow its dict, about 0.8 KB more on every socket (tracemalloc, bench §4).
        __slots__ = ("_last_end", "_keep", "_watched")

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._last_end = float("-inf")
            self._keep = False
            self._watched = False  # in `_live`, for the sweep

        def start_compress_message(self) -> None:
            if self._is_server:
                self._keep = time.monotonic() - self._last_end < BURST_SECONDS
            super().start_compress_message()

        def end_compress_message(self) -> bytes:
            data = super().end_compress_message()
            if self._is_server:
                self._last_end = time.monotonic()
                if not self._keep:
                    self._compressor = None
                elif not self._watched:  # once per burst, not once per frame
                    _watch(self)
            return data

        def end_decompress_message(self) -> None:
            super().end_decompress_message()
            if self._is_server and self.client_no_context_takeover:
                self._decompressor = None  # autobahn makes a new one for the next message anyway

        def release_if_idle(self, now: float) -> None:
            if self._compressor is not None and now - self._last_end >= IDLE_SECONDS:
                self._compressor = None

    return BurstDeflate


def _watch(deflate) -> None:
    """Remember a compressor's owner for the sweep (weakly: a closed socket drops out)."""
    _live.add(deflate)
    deflate._watched = True
    _schedule()


def _schedule() -> None:
    global _sweeping
    if not _sweeping:
        from twisted.internet import reactor  # daphne's, running: this is called while sending

        _sweeping = True
        reactor.callLater(SWEEP_SECONDS, _sweep)


def _sweep() -> None:
    """Drop the compressors of sockets quiet for IDLE_SECONDS; sweep again while any is kept."""
    global _sweeping
    _sweeping = False
    now = time.monotonic()
    for deflate in list(_live):
        deflate.release_if_idle(now)
        if deflate._compressor is None:
            _live.discard(deflate)
            deflate._watched = False
    if _live:
        _schedule()


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

    from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION, PerMessageDeflate

    entry = PERMESSAGE_COMPRESSION_EXTENSION[PerMessageDeflate.EXTENSION_NAME]
    entry["PMCE"] = _burst_deflate_class(entry["PMCE"])
