"""A frame's bytes on the wire (RFC 6455 framing, RFC 7692 compression), made once for
every socket that gets the same frame.

Why: a sidebar event (`conversation.updated` and the like) goes to every socket of the
user. With one user holding 200 tabs and 200 replies starting within one second, that
is 40,000 socket sends, and each paid the whole WebSocket send path on its own:
encoding the text to UTF-8, a compressor made for the message, deflating, framing
(bench §1, issue 14). The bytes were the same for every socket.

`SharedText` is the frame's text, a `str` that any ASGI server sends as it is, which
also keeps its framed bytes once made: one copy for sockets without compression, one
for sockets with permessage-deflate, deflated by a compressor with no history. Such a
message is readable by any client's decompressor, context kept or not (RFC 7692
§7.2.1). The server writes these bytes where it knows how (config/shared_frames.py).
"""
from __future__ import annotations

import struct
import zlib

# A fresh compressor's window only needs to cover the message itself; 9 bits (512 bytes)
# is the smallest zlib writes, and any decompressor window (RFC 7692: 8–15) reads it.
WINDOW_BITS = 9
# zlib's memory level: 2 makes the compressor in about 6 µs instead of 20 µs at the
# default 8 (its tables are what takes the time), with the same output on messages this size.
MEM_LEVEL = 2
_TEXT = 0x1
_FIN = 0x80
_RSV1 = 0x40  # "this message is compressed" under permessage-deflate


def frame(payload: bytes, *, compressed: bool) -> bytes:
    """A whole unmasked server → client text frame (RFC 6455 §5.2) around `payload`."""
    first = _FIN | (_RSV1 if compressed else 0) | _TEXT
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def deflate(data: bytes) -> bytes:
    """`data` as one permessage-deflate message from a compressor with no history."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -WINDOW_BITS, MEM_LEVEL)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out  # RFC 7692 §7.2.1: the tail is implied


class SharedText(str):
    """A frame's wire text that also keeps its framed bytes, made on first use."""

    __slots__ = ("_plain", "_deflated")

    def wire_bytes(self, compressed: bool) -> bytes:
        slot = "_deflated" if compressed else "_plain"
        try:
            return getattr(self, slot)
        except AttributeError:
            payload = deflate(self.encode()) if compressed else self.encode()
            made = frame(payload, compressed=compressed)
            setattr(self, slot, made)
            return made


# The ASGI scope extension through which a server lets the chat consumer write a text
# frame with a plain call instead of ASGI's `send` (config/frame_writer.py): its value
# is {"write": callable(text)}.
WRITE_TEXT = "chat.write_text"


def text_writer(scope: dict):
    """The server's direct text writer for this socket, or None (then use `send`)."""
    extension = (scope.get("extensions") or {}).get(WRITE_TEXT)
    return extension.get("write") if extension else None
