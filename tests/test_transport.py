"""Writes through to the kernel (config/transport.py): at once when nothing is queued,
through Twisted's queue otherwise, never out of order; a connection's later writes in
one turn of the event loop go out together at the start of the next. Also end to end:
with the patch installed in daphne (config/asgi.py), a client that stops reading is
still cut off by the buffer bound (tests/test_slow_client.py) and replies still arrive
whole."""
from __future__ import annotations

import asyncio

from twisted.internet import error

from config.backpressure import pending_bytes
from config.transport import release, write_through


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

    def _send_now(self, data: bytes) -> None:  # what install() gives tcp.Server
        write.send_now(self, data)

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


async def next_turn() -> None:
    """Let the loop finish this turn and run what was scheduled for the next one."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_later_writes_in_one_turn_of_the_loop_go_out_together_at_the_next():
    connection = FakeConnection()
    write(connection, b"one")
    write(connection, b"two")
    write(connection, b"three")
    assert connection.sent == [b"one"], "only the turn's first write goes at once"
    assert pending_bytes(connection) == len(b"twothree"), "held bytes count against the buffer bound"
    await next_turn()
    assert connection.sent == [b"one", b"twothree"] and connection.queued == []
    assert pending_bytes(connection) == 0
    write(connection, b"four")  # a new turn: at once again
    assert connection.sent[-1] == b"four"


async def test_one_write_per_turn_is_never_held():
    connection = FakeConnection()
    for frame in (b"a", b"b", b"c"):
        write(connection, frame)
        assert connection.sent[-1] == frame
        await next_turn()
    assert connection.sent == [b"a", b"b", b"c"]


async def test_each_connection_has_its_own_first_write_in_a_turn():
    first, second = FakeConnection(), FakeConnection()
    write(first, b"1a")
    write(second, b"2a")
    write(first, b"1b")
    assert first.sent == [b"1a"] and second.sent == [b"2a"]
    await next_turn()
    assert first.sent == [b"1a", b"1b"] and second.sent == [b"2a"]


async def test_held_bytes_that_the_kernel_does_not_take_queue_in_order():
    connection = FakeConnection(takes=2)
    write(connection, b"abcd")  # the kernel takes "ab"; "cd" is queued
    write(connection, b"ef")
    await next_turn()
    assert connection.sent == [b"ab"] and connection.queued == [b"cd", b"ef"]
    roomy = FakeConnection(takes=3)
    write(roomy, b"x")
    write(roomy, b"yyyy")
    write(roomy, b"zz")
    await next_turn()
    assert roomy.sent == [b"x", b"yyy"] and roomy.queued == [b"yzz"]


async def test_held_bytes_go_out_before_a_close_and_are_dropped_on_an_abort():
    closing = FakeConnection()
    write(closing, b"first")
    write(closing, b"close frame")
    release(closing)  # what loseConnection() and writeSequence() do first
    assert closing.sent == [b"first", b"close frame"]
    await next_turn()
    assert closing.sent == [b"first", b"close frame"], "nothing is sent twice"
    aborted = FakeConnection()
    write(aborted, b"first")
    write(aborted, b"never")
    aborted._aborting = True
    await next_turn()
    assert aborted.sent == [b"first"]
    lost = FakeConnection()
    write(lost, b"first")
    write(lost, b"never")
    lost.connected = False
    await next_turn()
    assert lost.sent == [b"first"] and lost.queued == []


async def test_a_connection_that_fails_to_send_does_not_keep_the_others_bytes_held(caplog):
    class Broken(FakeConnection):
        def writeSomeData(self, data):
            if self.sent:
                raise OSError("the socket is gone")
            return super().writeSomeData(data)

    broken, healthy = Broken(), FakeConnection()
    write(broken, b"first")
    write(healthy, b"first")
    write(broken, b"held")
    write(healthy, b"held")
    await next_turn()
    assert healthy.sent == [b"first", b"held"]
    assert pending_bytes(broken) == 0 and "held bytes not sent" in caplog.text
    write(healthy, b"next")
    assert healthy.sent[-1] == b"next", "nothing stays held after the turn"


def test_outside_an_event_loop_every_write_goes_at_once():
    connection = FakeConnection()
    write(connection, b"one")
    write(connection, b"two")
    assert connection.sent == [b"one", b"two"]


async def test_twisteds_close_and_sequence_writes_send_held_bytes_first():
    """The patched tcp.Server methods, run on a connection holding bytes."""
    from twisted.internet import tcp

    from config import transport

    transport.install()

    class Closable(FakeConnection):
        def stopReading(self):
            self.events.append("stop reading")

        def startWriting(self):
            self.events.append("start writing")

        def stopWriting(self):
            self.events.append("stop writing")

        def _maybePauseProducer(self):
            pass

        def connectionLost(self, reason):
            self.connected = False

    def holding() -> Closable:
        connection = Closable()
        connection.events, connection._tempDataBuffer, connection.producer = [], [], None
        connection.disconnected = connection._aborting = False
        write(connection, b"first")
        write(connection, b"held")
        connection.reactor = type("Reactor", (), {"callLater": lambda *args: None})()
        return connection

    closing = holding()
    tcp.Server.loseConnection(closing)
    assert closing.sent == [b"first", b"held"] and closing.disconnecting and "start writing" in closing.events
    sequence = holding()
    tcp.Server.writeSequence(sequence, [b"twisted's own"])
    assert sequence.sent == [b"first", b"held"], "held bytes went out before Twisted queued its own"
    assert sequence._tempDataBuffer == [b"twisted's own"]
    aborted = holding()
    tcp.Server.abortConnection(aborted)
    await next_turn()
    assert aborted.sent == [b"first"] and pending_bytes(aborted) == 0
