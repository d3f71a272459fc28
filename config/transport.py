"""daphne's TCP connections hand bytes to the kernel at once when nothing is queued, and
send a socket's later frames of the same turn of the event loop together.

Twisted's transports never send in `write()`: they queue the bytes, ask the event loop
to watch the socket for writability (an `epoll_ctl`), send on the next turn of the
loop, and stop watching (another `epoll_ctl`). asyncio's own transports try the send
first and queue only what the kernel did not take. For a relay that writes one small
frame per token to each tab, the Twisted way cost a turn of the loop, two system calls
and Twisted's dispatch for every frame and every socket: about a tenth of the server's
CPU per relayed token (py-spy, bench §2). So a connection's first write in a turn of the
loop goes to the kernel at once.

Its later writes in the same turn are held (`_corked`) and sent as one at the start of
the next turn. A socket gets several frames in one turn when one user's tabs all hear
about many conversations at once: 200 replies starting within a second sent each of a
user's 200 tabs a sidebar frame per reply, one `send` system call each, and that call
(which also hands the GIL to the worker threads storing those turns) was the largest
single cost of the burst (py-spy, bench §1's 200-tab scenario). A socket that gets one
frame per turn, as a tab following one reply does, waits for nothing.

Twisted's own queued write is used for what the kernel did not take, and whenever bytes
are already queued there (so order is kept), the connection runs TLS (its protocol
encrypts and writes again through here), is closing, or is lost; held bytes go out
before anything Twisted writes on its own (`writeSequence`) and before the connection is
closed, and are dropped with it when it is aborted. Backpressure is unchanged: what a
client does not read still ends up in Twisted's queue, which config/backpressure.py
bounds (it counts held bytes too).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# The connections written during the current turn of each event loop, until `_end_turn`
# runs at the start of the next one (the list itself tells one turn from the next).
_turns: dict[asyncio.AbstractEventLoop, list[Any]] = {}


def _current_turn() -> list[Any] | None:
    """This turn of the running loop, begun by its first write; None outside a loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    turn = _turns.get(loop)
    if turn is None:
        if len(_turns) > 4:  # loops closed before their turn ended (tests): forget them
            for old in [old for old in _turns if old.is_closed()]:
                del _turns[old]
        turn = _turns[loop] = []
        loop.call_soon(_end_turn, loop, turn)
    return turn


def _end_turn(loop: asyncio.AbstractEventLoop, turn: list[Any]) -> None:
    """Send what each connection held back during the turn: one system call each."""
    if _turns.get(loop) is turn:
        del _turns[loop]
    for connection in turn:
        connection._written_in = None
        try:
            release(connection)
        except Exception:  # one broken connection must not keep the others' bytes held
            logger.exception("held bytes not sent")


def held_bytes(connection: Any) -> int:
    """Bytes written during this turn that wait for its end (config/backpressure.py)."""
    return getattr(connection, "_corked_bytes", 0)


def release(connection: Any) -> None:
    """Send what `connection` holds back now (before a close or a write of Twisted's own)."""
    corked = connection.__dict__.get("_corked")
    if corked is None:
        return
    connection._corked, connection._corked_bytes = None, 0
    if connection.connected and not connection.disconnecting and not getattr(connection, "_aborting", False):
        connection._send_now(b"".join(corked))


def write_through(queued_write: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    """A transport `write` that sends at once when it can, else calls `queued_write`."""

    def send_now(self: Any, data: bytes) -> None:
        if (self.TLS or not data or not self.connected or self.disconnecting or self._writeDisconnected
                or len(self.dataBuffer) > self.offset or self._tempDataLen):
            return queued_write(self, data)
        sent = self.writeSomeData(data)
        if isinstance(sent, BaseException):  # the connection is lost: Twisted's own path reports it
            return queued_write(self, data)
        if sent < len(data):
            queued_write(self, bytes(data[sent:]))
        return None

    def write(self: Any, data: bytes) -> None:
        corked = self.__dict__.get("_corked")
        if corked is not None:  # bytes already held this turn: these go behind them
            corked.append(data)
            self._corked_bytes += len(data)
            return None
        turn = _current_turn() if data else None
        if turn is None:
            return send_now(self, data)
        if self.__dict__.get("_written_in") is turn:  # written once this turn already: hold
            self._corked, self._corked_bytes = [data], len(data)
            return None
        self._written_in = turn
        turn.append(self)
        return send_now(self, data)

    write.writes_through = True
    write.send_now = send_now
    return write


def install() -> None:
    """Patch Twisted's TCP server connections, which daphne uses (idempotent)."""
    from twisted.internet import tcp

    if getattr(tcp.Server.write, "writes_through", False):
        return
    write = write_through(tcp.Server.write)
    tcp.Server.write = write
    tcp.Server._send_now = write.send_now
    write_sequence, lose, abort = tcp.Server.writeSequence, tcp.Server.loseConnection, tcp.Server.abortConnection

    def writeSequence(self, iovec):
        release(self)
        return write_sequence(self, iovec)

    def loseConnection(self, *args, **kwargs):
        release(self)
        return lose(self, *args, **kwargs)

    def abortConnection(self):
        self.__dict__.pop("_corked", None)
        self._corked_bytes = 0
        return abort(self)

    tcp.Server.writeSequence, tcp.Server.loseConnection, tcp.Server.abortConnection = writeSequence, loseConnection, abortConnection
