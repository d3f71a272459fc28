"""Writes through to the kernel (config/transport.py): at once when nothing is queued,
through Twisted's queue otherwise, never out of order. Also end to end: with the patch
installed in daphne (config/asgi.py), a client that stops reading is still cut off by the
buffer bound (tests/test_slow_client.py) and replies still arrive whole."""
from __future__ import annotations

from twisted.internet import error

from config.transport import write_through


class FakeConnection:
    """The attributes of twisted.internet.tcp.Server that the write looks at."""

    def __init__(self, takes: int | None = None, lost: bool = False):
        self.TLS = False
        self.connected = True
        self.disconnecting = False
        self._writeDisconnected = False
        self.dataBuffer, self.offset, self._tempDataLen = b"", 0, 0
        self.takes, self.lost = takes, lost
        self.sent: list[bytes] = []
        self.queued: list[bytes] = []

    def writeSomeData(self, data: bytes):
        if self.lost:
            return error.ConnectionLost()
        taken = bytes(data[: self.takes if self.takes is not None else len(data)])
        self.sent.append(taken)
        return len(taken)


def queued(connection: FakeConnection, data: bytes) -> None:
    connection.queued.append(data)
    connection._tempDataLen += len(data)


write = write_through(queued)


def test_a_frame_goes_to_the_kernel_at_once_when_nothing_is_queued():
    connection = FakeConnection()
    write(connection, b"frame one")
    write(connection, b"frame two")
    assert connection.sent == [b"frame one", b"frame two"] and connection.queued == []


def test_what_the_kernel_does_not_take_is_queued_and_later_frames_queue_behind_it():
    connection = FakeConnection(takes=3)
    write(connection, b"abcdef")
    write(connection, b"ghi")  # something is queued: this one must wait behind it
    assert connection.sent == [b"abc"] and connection.queued == [b"def", b"ghi"]


def test_bytes_already_in_twisteds_buffer_keep_their_place():
    connection = FakeConnection()
    connection.dataBuffer, connection.offset = b"older bytes", 5
    write(connection, b"new")
    assert connection.sent == [] and connection.queued == [b"new"]


def test_tls_closing_or_lost_connections_use_twisteds_own_write():
    for setting in ("TLS", "disconnecting", "_writeDisconnected"):
        connection = FakeConnection()
        setattr(connection, setting, True)
        write(connection, b"x")
        assert connection.sent == [] and connection.queued == [b"x"], setting
    gone = FakeConnection(lost=True)
    write(gone, b"x")
    assert gone.queued == [b"x"], "a lost connection is reported by Twisted's path"


def test_daphne_runs_with_the_write_through_installed(tmp_path):
    from tests.test_production import run_django

    code = ("import daphne.server, config.asgi; from twisted.internet import tcp; "
            "print(getattr(tcp.Server.write, 'writes_through', False))")
    result = run_django(tmp_path, ["-c", code])
    assert result.stdout.strip() == "True", result.stderr
