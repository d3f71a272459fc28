"""daphne's TCP connections hand bytes to the kernel at once when nothing is queued.

Twisted's transports never send in `write()`: they queue the bytes, ask the event loop
to watch the socket for writability (an `epoll_ctl`), send on the next turn of the
loop, and stop watching (another `epoll_ctl`). asyncio's own transports try the send
first and queue only what the kernel did not take. For a relay that writes one small
frame per token to each tab, the Twisted way cost a turn of the loop, two system calls
and Twisted's dispatch for every frame and every socket: about a tenth of the server's
CPU per relayed token (py-spy, bench §2).

`install` makes daphne's server connections try the send first too. Twisted's own
queued write is used for what the kernel did not take, and whenever bytes are already
queued (so order is kept), the connection runs TLS (its protocol encrypts and writes
again through here), is closing, or is lost. Backpressure is unchanged: what a client
does not read still ends up in Twisted's queue, which config/backpressure.py bounds.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def write_through(queued_write: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    """A transport `write` that sends at once when it can, else calls `queued_write`."""

    def write(self: Any, data: bytes) -> None:
        if (self.TLS or not data or not self.connected or self.disconnecting or self._writeDisconnected
                or len(self.dataBuffer) > self.offset or self._tempDataLen):
            return queued_write(self, data)
        sent = self.writeSomeData(data)
        if isinstance(sent, BaseException):  # the connection is lost: Twisted's own path reports it
            return queued_write(self, data)
        if sent < len(data):
            queued_write(self, bytes(data[sent:]))
        return None

    write.writes_through = True
    return write


def install() -> None:
    """Patch Twisted's TCP server connections, which daphne uses (idempotent)."""
    from twisted.internet import tcp

    if getattr(tcp.Server.write, "writes_through", False):
        return
    tcp.Server.write = write_through(tcp.Server.write)
