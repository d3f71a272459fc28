"""A model's streamed response body, read off its HTTP/1.1 connection.

Why: a model streams one small chunk (~150 bytes) per token, and reading each through
httpx2 and httpcore2 passed six nested async iterators, two `h11.next_event` calls and
two context managers: a third of the server's CPU per relayed token with one tab
(py-spy, bench §2). `ChunkedBody` reads the body's chunked framing itself from the
connection's network stream (`chat/backends/asyncio_stream.py`), one step per read.

The connection must stay reusable (a TLS handshake per reply would cost more than this
saves), and httpcore2 reuses it only if h11 saw the whole body end. h11 never sees the
chunks read here; when the body has ended, it is given the shortest body that leaves it
where the real one did: whatever it already held completed to the next chunk's start,
then the last chunk (`0\\r\\n\\r\\n`). Only h11's public calls are used (`trailing_data`,
`receive_data`, `next_event`); httpcore2 then sees both sides done when the response
closes and puts the connection back in its pool. A body stopped early, cut or malformed
is never handed to h11: httpcore2 closes its connection, as before.

Used only where it applies (`for_response`): HTTP/1.1, `Transfer-Encoding: chunked`, no
`Content-Encoding`, httpcore2's own HTTP/1.1 connection (not a proxy tunnel). Any other
response is read by httpx2 as before.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

MAX_LINE = 4096  # a chunk-size line, or a trailer line
MAX_TRAILERS = 64 * 1024
READ_BYTES = 64 * 1024
LAST_CHUNK = b"0\r\n\r\n"

# Where the parse is within the chunked framing.
_SIZE, _DATA, _CRLF, _TRAILER, _END = range(5)


def _protocol_error(message: str) -> Exception:
    import httpx2

    return httpx2.RemoteProtocolError(message)


def for_response(response: Any) -> ChunkedBody | None:
    """The direct reader of an httpx2 response's body, or None where it does not apply
    (then httpx2 reads it). Call before anything has read the body.

    It reaches through httpx2's and httpcore2's private attributes to the connection;
    should an upgrade move them, this answers None and httpx2 reads every body as before
    (tests/test_chunked_body.py then fails: it checks that the reader is used)."""
    headers = response.headers
    if response.http_version != "HTTP/1.1" or headers.get("content-encoding", "identity").lower() != "identity":
        return None
    if headers.get("transfer-encoding", "").replace(" ", "").lower().rsplit(",", 1)[-1] != "chunked":
        return None
    try:
        return _reader_on_connection(response)
    except (ImportError, AttributeError):
        return None


def _reader_on_connection(response: Any) -> ChunkedBody | None:
    import h11
    import httpcore2
    from httpcore2._async.http11 import HTTP11ConnectionByteStream

    # httpx2's stream (BoundAsyncStream) → its httpcore2 stream (AsyncResponseStream) → the
    # pool's (PoolByteStream) → the HTTP/1.1 connection's.
    h11_stream = response.stream._stream._httpcore_stream._stream
    if not isinstance(h11_stream, HTTP11ConnectionByteStream):
        return None
    connection = h11_stream._connection
    if not isinstance(connection, httpcore2.AsyncHTTP11Connection):
        return None
    state = connection._h11_state
    held, closed = state.trailing_data
    if state.their_state is not h11.SEND_BODY or closed:
        return None
    timeout = h11_stream._request.extensions.get("timeout", {}).get("read")
    return ChunkedBody(connection._network_stream, state, held, timeout)


class ChunkedBody:
    """The payload of a chunked body, as it arrives: one piece per read of the socket."""

    def __init__(self, network_stream: Any, h11_state: Any, held: bytes, timeout: float | None) -> None:
        self._stream = network_stream
        self._h11 = h11_state
        self._timeout = timeout
        self._buffer = bytearray(held)  # bytes h11 had received but not parsed: the body's start
        self._offset = 0  # of the buffer's first byte, in the body
        self._state = _SIZE
        self._left = 0  # bytes of the current chunk still to come
        self._trailers = 0
        # What h11 holds (the body's first `_h11_upto` bytes) must be completed to a chunk
        # boundary before the last chunk is given to it: `_owed` keeps the bytes read
        # after them until the first boundary at or after that point.
        self._h11_upto = len(held)
        self._owed = bytearray()
        self._synced = not held
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pieces = self._parse()
        if pieces:
            yield pieces
        while self._state != _END:
            data = await self._read()
            if not data:
                raise _protocol_error("peer closed connection without sending complete message body: "
                                      "incomplete chunked read")
            if not self._synced:
                self._owed += data
            self._buffer += data
            pieces = self._parse()
            if pieces:
                yield pieces
        self._finish_h11()
        self.ended = True

    async def _read(self) -> bytes:
        try:
            return await self._stream.read(READ_BYTES, self._timeout)
        except Exception as error:  # httpcore2's errors, as httpx2 would raise them
            mapped = _httpx2_error(error)
            if mapped is None:
                raise
            raise mapped from error

    def _parse(self) -> bytes:
        """Advance over the buffer; the chunk data found in it."""
        buffer, at, out = self._buffer, 0, []
        size = len(buffer)
        while True:
            state = self._state
            if state == _DATA:
                take = min(self._left, size - at)
                if take:
                    out.append(buffer[at:at + take])
                    at += take
                    self._left -= take
                if self._left:
                    break
                self._state = _CRLF
            elif state == _CRLF:
                if size - at < 2:
                    if buffer[at:size] != b"\r\n"[:size - at]:
                        raise _protocol_error("malformed chunk footer")
                    break
                if buffer[at:at + 2] != b"\r\n":
                    raise _protocol_error("malformed chunk footer")
                at += 2
                self._state = _SIZE
                self._at_boundary(self._offset + at)
            elif state == _SIZE:
                end = buffer.find(b"\r\n", at)
                if end < 0:
                    if size - at > MAX_LINE:
                        raise _protocol_error("chunk header too long")
                    break
                self._left = _chunk_size(buffer[at:end])
                at = end + 2
                self._state = _DATA if self._left else _TRAILER
            elif state == _TRAILER:
                end = buffer.find(b"\n", at)
                if end < 0:
                    if size - at > MAX_LINE:
                        raise _protocol_error("trailer line too long")
                    break
                line_length = end + 1 - at
                self._trailers += line_length
                if self._trailers > MAX_TRAILERS:
                    raise _protocol_error("trailers too long")
                at = end + 1
                if line_length <= 2 and buffer[at - line_length:at] in (b"\r\n", b"\n"):
                    self._state = _END
            else:  # _END
                break
        del buffer[:at]
        self._offset += at
        return b"".join(out)

    def _at_boundary(self, offset: int) -> None:
        if not self._synced and offset >= self._h11_upto:
            del self._owed[offset - self._h11_upto:]
            self._synced = True

    def _finish_h11(self) -> None:
        """Give h11 the end of the body (see the module's docstring). Bytes after the body
        (a server that writes on) leave h11 where it was: the connection is then closed."""
        if self._buffer:
            return
        end = self._offset
        if self._synced:
            feed = bytes(self._owed) + LAST_CHUNK
        elif end >= self._h11_upto:
            feed = bytes(self._owed[:end - self._h11_upto])
        else:
            return
        import h11

        try:
            if feed:  # (b"" would tell h11 that the connection was closed)
                self._h11.receive_data(feed)
            while True:
                event = self._h11.next_event()
                if not isinstance(event, h11.Data):
                    return
        except h11.ProtocolError:
            return


def _httpx2_error(error: Exception) -> Exception | None:
    """httpx2's error for a failed read of httpcore2's stream (imported only then: reads
    are per token)."""
    import httpcore2
    import httpx2

    if isinstance(error, httpcore2.TimeoutException):
        return httpx2.ReadTimeout(str(error))
    if isinstance(error, httpcore2.NetworkError):
        return httpx2.ReadError(str(error))
    return None


def _chunk_size(line: bytearray) -> int:
    """The size of a chunk-size line (`1a;ext=v`), extensions ignored, as h11 does."""
    digits = bytes(line.split(b";", 1)[0]).rstrip(b" \t")
    if not 0 < len(digits) <= 20 or digits.strip(b"0123456789abcdefABCDEF"):
        raise _protocol_error(f"illegal chunk header: {bytes(line[:40])!r}")
    return int(digits, 16)
