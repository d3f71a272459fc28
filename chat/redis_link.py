"""Redis connections for the fan-out between processes: commands written as they come,
whatever Redis sends read in bulk.

Why: with a tab on each of two processes, every relayed token is one PUBLISH from the
process that runs the reply and one pushed message into the other. Through redis-py and
channels_redis that was about a third of both processes' CPU (py-spy, bench §1 "pair"):
a pipeline object, its `execute` and the wait for its replies per batch on one side;
per message a `get_message` under its own timeout, a queue, the layer's `receive` on the
other. Here a `Publisher` writes the PUBLISH commands queued during one turn of the
event loop as one write and counts the replies as they come back, and a `Subscriber`
reads what Redis pushes in whole buffers and parses them with hiredis (the C parser
redis-py itself uses).

redis-py still makes each connection (the address, TLS, AUTH, SELECT, a sentinel's
master, as configured for channels_redis); then its streams are used directly. The
channel names, shards and serialized messages stay channels_redis's pub/sub layer's
(chat/fanout.py), so a process reads what `group_send` would send and the reverse.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import hiredis
from channels_redis.utils import create_pool

logger = logging.getLogger(__name__)

READ_SIZE = 256 * 1024


def command(*args: bytes) -> bytes:
    """One command in Redis's protocol (RESP): an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Link:
    """One connection, made by redis-py, then read and written as raw streams."""

    def __init__(self, connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connection = connection  # kept: redis-py closes the streams when it is collected
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: dict) -> Link:
        connection = create_pool(host).make_connection()
        await connection.connect()
        reader, writer = getattr(connection, "_reader", None), getattr(connection, "_writer", None)
        if not isinstance(reader, asyncio.StreamReader) or not isinstance(writer, asyncio.StreamWriter):
            raise RuntimeError("redis-py's connection no longer keeps its streams: chat/redis_link.py must be adapted")
        return cls(connection, reader, writer)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_batches(self):
        """The replies and pushed messages hiredis parses from each read, as one list per read,
        until the connection ends."""
        parser = hiredis.Reader()
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                return
            parser.feed(data)
            batch = []
            while (reply := parser.gets()) is not False:
                batch.append(reply)
            yield batch

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.connection._reader = self.connection._writer = None  # closed here, not again by redis-py


class Publisher:
    """PUBLISH on one connection: written once per turn of the loop, never waiting for a reply.

    Redis runs a connection's commands in order, so frames keep their order. Only when
    `limit` commands are queued or unanswered (Redis slower than the replies) does a sender
    wait for room: a slow Redis then slows the replies down (their deltas coalesce)
    instead of filling the memory. When Redis cannot be reached, frames are dropped (the
    other processes' tabs see a `seq` gap and resynchronise), said once per outage, and no
    connection is tried again for `retry_after` seconds, so senders never wait on it.

    Redis servers often close connections idle for a while (Heroku's after 300 s): a
    connection unused for `idle_after` seconds is closed here first and the next frame
    opens a new one, so no frame is written into a connection being closed; and one that
    Redis closes while nothing is unanswered is simply made again, not an outage."""

    def __init__(self, host: dict, *, limit: int = 5000, retry_after: float = 1.0, idle_after: float = 60.0) -> None:
        self.host = host
        self.limit = limit
        self.retry_after = retry_after
        self.idle_after = idle_after
        self._used_at = 0.0
        self.link: Link | None = None
        self.queued: list[bytes] = []
        self.unanswered = 0
        self.room = asyncio.Event()
        self.room.set()
        self.idle = asyncio.Event()  # nothing queued or unanswered
        self.idle.set()
        self._scheduled = False
        self._connecting: asyncio.Task | None = None
        self._reading: asyncio.Task | None = None
        self._failed_at = float("-inf")
        self.failing = False

    async def publish(self, channel: bytes, data: bytes) -> None:
        if self.link is None and self._connecting is None and time.monotonic() - self._failed_at < self.retry_after:
            return  # Redis was unreachable a moment ago: dropped, as in the outage
        self.queued.append(command(b"PUBLISH", channel, data))
        self.idle.clear()
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if len(self.queued) + self.unanswered >= self.limit:
            self.room.clear()
            await self.room.wait()

    async def flushed(self) -> None:
        """Wait until every frame queued so far has been published (or given up on)."""
        await self.idle.wait()

    def _flush(self) -> None:
        self._scheduled = False
        if not self.queued:
            return
        now = time.monotonic()
        if self.link is not None and not self.unanswered and now - self._used_at > self.idle_after:
            self._drop_link()  # idle long enough for Redis to be closing it: start afresh
        self._used_at = now
        if self.link is None:
            if self._connecting is None:
                self._connecting = asyncio.create_task(self._connect(), name="fanout-publisher-connect")
            return  # written once connected
        batch, self.queued = self.queued, []
        self.unanswered += len(batch)
        self.link.write(b"".join(batch))

    async def _connect(self) -> None:
        try:
            link = await Link.open(self.host)
        except Exception:
            self._connecting = None
            self._failed_at = time.monotonic()
            self._lost(f"{len(self.queued)} frames", exc_info=True)
            self.queued = []
            self._settle()
            return
        self._connecting = None
        self.link = link
        if self.failing:
            logger.info("frames are relayed to other processes again")
            self.failing = False
        self._reading = asyncio.create_task(self._read(link), name="fanout-publisher-replies")
        self._flush()

    async def _read(self, link: Link) -> None:
        try:
            async for batch in link.read_batches():
                for reply in batch:
                    if isinstance(reply, hiredis.ReplyError):
                        logger.warning("Redis refused a frame for other processes", extra={"error": str(reply)})
                self.unanswered -= len(batch)
                if len(self.queued) + self.unanswered < self.limit:
                    self.room.set()
                self._settle()
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # said below, as a lost connection
        if self.link is link:
            if self.unanswered:  # frames may be lost: an outage
                self._failed_at = time.monotonic()
                self._lost(f"{self.unanswered} frames unanswered")
            else:  # closed by Redis while idle (its `timeout`): the next frame connects again
                logger.info("Redis closed an idle connection for frames to other processes")
            self._drop_link()

    def _drop_link(self) -> None:
        link, self.link = self.link, None
        reading, self._reading = self._reading, None
        if reading is not None and reading is not asyncio.current_task():
            reading.cancel()
        if link is not None:
            link.close()
        self.unanswered = 0
        self.room.set()
        self._settle()

    def _lost(self, what: str, exc_info: bool = False) -> None:
        if not self.failing:
            logger.warning("frames not relayed to other processes", exc_info=exc_info, extra={"lost": what})
        self.failing = True

    def _settle(self) -> None:
        if not self.queued and not self.unanswered and self._connecting is None:
            self.idle.set()
            self.room.set()

    async def close(self) -> None:
        """Close the connection; what was written still reaches Redis."""
        link, self.link = self.link, None
        for task in (self._connecting, self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if link is not None:
            link.close()
        self.queued, self.unanswered = [], 0
        self._settle()


class Subscriber:
    """SUBSCRIBE on one connection; every pushed message handed to `received`, in order.

    Subscriptions are kept as the set of channels wanted: `subscribe` and `unsubscribe`
    change it, and once per turn of the loop the difference from what Redis was last told
    goes out as one SUBSCRIBE and one UNSUBSCRIBE (so a group left and joined again in
    one turn costs nothing, and many joined together cost one command). When the
    connection is lost, it is made again (backing off up to `max_backoff` seconds) and
    told every channel wanted; what was published meanwhile is lost, which tabs see as a
    `seq` gap and repair. A connection that hears nothing for `ping_after` seconds is sent
    a PING, and one that still hears nothing after as long again is taken for lost (a
    peer or a proxy gone without closing it), so a silent connection is never trusted."""

    def __init__(self, host: dict, received: Callable[[bytes], Awaitable[None]], *, max_backoff: float = 5.0,
                 ping_after: float = 30.0) -> None:
        self.host = host
        self.received = received
        self.max_backoff = max_backoff
        self.ping_after = ping_after
        self._heard_at = 0.0
        self._watchdog: asyncio.Task | None = None
        self.wanted: set[bytes] = set()
        self.told: set[bytes] = set()  # what the current connection was told
        self.link: Link | None = None
        self.task: asyncio.Task | None = None
        self._written: asyncio.Future | None = None  # the next flush, for joiners to wait on

    async def start(self) -> None:
        """Connect (raising when Redis cannot be reached) and start listening."""
        self.link = await Link.open(self.host)
        self._heard_at = time.monotonic()
        self.task = asyncio.create_task(self._listen(), name="fanout-subscriber")
        self._watchdog = asyncio.create_task(self._watch(), name="fanout-subscriber-watchdog")

    async def subscribe(self, channel: bytes) -> None:
        """Add `channel`; returns once the command is written (as channels_redis's `group_add`)."""
        self.wanted.add(channel)
        await asyncio.shield(self._schedule())

    def unsubscribe(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        self._schedule()

    def _schedule(self) -> asyncio.Future:
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        return self._written

    def _flush(self) -> None:
        written, self._written = self._written, None
        if self.link is not None:
            self._tell(self.link)
        if written is not None and not written.done():
            written.set_result(None)

    def _tell(self, link: Link) -> None:
        new, gone = self.wanted - self.told, self.told - self.wanted
        if new:
            link.write(command(b"SUBSCRIBE", *sorted(new)))
        if gone:
            link.write(command(b"UNSUBSCRIBE", *sorted(gone)))
        self.told = set(self.wanted)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            link = self.link
            if link is not None:
                try:
                    async for batch in link.read_batches():
                        self._heard_at = time.monotonic()
                        for reply in batch:
                            # ["message", channel, data] (a list in RESP2, a push in RESP3, redis-py's
                            # default); also ["subscribe", channel, count] and the like
                            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                                await self.received(reply[2])
                        backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.warning("fan-out subscription lost", exc_info=True)
                else:
                    logger.warning("fan-out subscription lost: Redis closed the connection")
                link.close()
                self.link = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
            try:
                link = await Link.open(self.host)
            except Exception:
                continue
            self.told = set()
            self.link = link
            self._heard_at = time.monotonic()
            self._tell(link)
            logger.info("fan-out subscription restored", extra={"channels": len(self.wanted)})

    async def _watch(self) -> None:
        pinged = None  # the link that was sent a PING and has not answered yet
        while True:
            await asyncio.sleep(self.ping_after / 2)
            link, silent = self.link, time.monotonic() - self._heard_at
            if link is None or silent < self.ping_after:
                pinged = None
            elif pinged is not link:
                link.write(command(b"PING"))
                pinged = link
            elif silent >= 2 * self.ping_after:
                logger.warning("fan-out subscription silent: connecting again", extra={"seconds": round(silent, 1)})
                link.writer.transport.abort()  # the listener sees the connection end and makes a new one
                pinged = None

    async def close(self) -> None:
        for task in (self._watchdog, self.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.link is not None:
            self.link.close()
            self.link = None
