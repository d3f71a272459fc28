"""The model client's sockets on asyncio's own transports, not anyio's.

Why: httpcore2 reads a streamed response through anyio. Every read enters an anyio
cancel scope for its timeout (which asks which async library is running, finds the
current task, arms and disarms a timer), resumes the socket's reading and pauses it
again (two `epoll_ctl`), and waits on an event; when data is already there it yields a
turn of the loop first. A model streams a small chunk per token, so with 200 replies
streaming that was about a sixth of the event loop's time: reading the model's stream
was 40 % of it, and anyio and its calls into asyncio about 40 % of that (py-spy, bench §1).

`AsyncioBackend` is an httpcore2 network backend (its documented interface) on an
`asyncio.Protocol`: the socket is read as data comes (paused only while more than
`HIGH_WATER` bytes wait unread), `read()` returns what has arrived without waiting
when there is some, and a timer is armed only when it must wait. TLS is asyncio's
`start_tls`. Failures are httpcore2's exceptions, as its anyio backend raises them,
so httpx2 and huggingface_hub report them as before.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any

HIGH_WATER = 256 * 1024  # unread bytes at which the socket stops being read
LOW_WATER = 64 * 1024  # and below which it is read again


def _errors():
    import httpcore2

    return httpcore2


class _Reader(asyncio.Protocol):
    """Keeps what the socket delivers until the stream reads it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        self.waiter: asyncio.Future | None = None
        self.drained: asyncio.Future | None = None  # set while writing is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: this client never writes after the server's end

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = self.error or exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class AsyncioStream:
    """httpcore2's `AsyncNetworkStream` over a transport and its `_Reader`."""

    def __init__(self, transport: asyncio.Transport, reader: _Reader) -> None:
        self._transport = transport
        self._reader = reader
        reader.transport = transport

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reader = self._reader
        if not reader.chunks:
            if reader.eof:
                return self._at_end()
            loop = asyncio.get_running_loop()
            reader.waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            except TimeoutError:
                raise _errors().ReadTimeout("timed out reading from the model") from None
            finally:
                reader.waiter = None
                if timer is not None:
                    timer.cancel()
            if not reader.chunks:
                return self._at_end()
        chunk = reader.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            reader.chunks.appendleft(rest)
        reader.size -= len(chunk)
        if reader.paused and reader.size < LOW_WATER:
            reader.paused = False
            self._transport.resume_reading()
        return chunk

    def _at_end(self) -> bytes:
        """What a read returns once the socket has ended: b"", or the error that ended it."""
        error = self._reader.error
        if error is not None:
            raise _errors().ReadError(str(error) or type(error).__name__) from error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise _errors().WriteError("the connection is closed")
        self._transport.write(buffer)
        drained = self._reader.drained
        if drained is not None:
            try:
                await asyncio.wait_for(asyncio.shield(drained), timeout)
            except TimeoutError:
                raise _errors().WriteTimeout("timed out writing to the model") from None
        if self._reader.error is not None and self._transport.is_closing():
            raise _errors().WriteError(str(self._reader.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncioStream:
        errors = _errors()
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self._transport, self._reader, ssl_context,
                                             server_hostname=server_hostname, ssl_handshake_timeout=timeout)
        except TimeoutError as error:
            self._transport.abort()
            raise errors.ConnectTimeout("timed out in the TLS handshake") from error
        except (OSError, ssl.SSLError, ConnectionError) as error:
            self._transport.abort()
            raise errors.ConnectError(str(error)) from error
        return AsyncioStream(transport, self._reader)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":  # an idle pooled connection the server has closed, or sent to
            return bool(self._reader.chunks) or self._reader.eof
        return None


class AsyncioBackend:
    """httpcore2's `AsyncNetworkBackend` on asyncio's transports."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncioStream:
        local = (local_address, 0) if local_address else None
        return await self._connect(
            lambda reader: asyncio.get_running_loop().create_connection(lambda: reader, host, port, local_addr=local),
            timeout, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> AsyncioStream:
        return await self._connect(
            lambda reader: asyncio.get_running_loop().create_unix_connection(lambda: reader, path),
            timeout, socket_options)

    async def _connect(self, open_connection, timeout: float | None, socket_options) -> AsyncioStream:
        errors = _errors()
        reader = _Reader()
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await open_connection(reader)
        except TimeoutError as error:
            raise errors.ConnectTimeout("timed out connecting to the model") from error
        except OSError as error:
            raise errors.ConnectError(str(error)) from error
        sock: socket.socket | None = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, reader)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
