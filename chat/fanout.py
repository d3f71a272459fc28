"""Groups of sockets: delivered in this process by a direct call, elsewhere by Redis pub/sub.

Channels' groups cost a channel-layer message per socket and per frame, and each
message wakes the socket's consumer task on its way in: with a delta per token, that
was most of the relay's CPU under load (docs/benchmarks.md). So a socket joins its
groups here, with itself as the member. A frame for a group is handed to the members
in this process directly, in order, and reaches the other processes once each: every
process is one member of the group in the `fanout` channel layer (its relay channel),
subscribed while it has a socket in the group.

That layer is channels_redis's pub/sub layer, not the default one. The default layer
keeps one list per process in Redis, pops it one message per round trip and drops
what is over its capacity: two processes relaying 100 replies each fell seconds
behind and lost thousands of deltas (docs/benchmarks.md, issue 14). A PUBLISH per
frame is pushed to every subscribed process at once and read in bulk, in order per
publisher; a frame lost while Redis is unreachable shows up as a `seq` gap, which the
page repairs by asking for the conversation's state.

Without a `fanout` layer (the embedded in-memory default) there are no other
processes, and fan-out uses no layer at all. Events that must reach a socket by its
own channel (a reply's snapshot, a resume timer) go through the default layer
(chat/events.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Protocol

from channels.layers import channel_layers

logger = logging.getLogger(__name__)

LAYER = "fanout"  # the CHANNEL_LAYERS alias that carries frames between processes
RELAYED = "fanout.relay"  # the event that carries a group's event to another process


class Member(Protocol):
    """A socket: its own channel (requests' answers name it) and how it takes an event."""

    channel_name: str

    async def deliver(self, event: dict) -> None: ...


# The members of each group in this process. A set keeps no order; a dict does, and
# order is what tabs of one user see when two events follow each other.
_members: dict[str, dict[Member, None]] = {}
_relays: dict[asyncio.AbstractEventLoop, _Relay] = {}
_outboxes: dict[asyncio.AbstractEventLoop, _Outbox] = {}
_PROCESS = secrets.token_hex(8)  # tells this process's own relayed events from others'


def _layer():
    """The layer between processes, or None when this process is the only one."""
    return channel_layers[LAYER] if LAYER in channel_layers.configs else None


async def join(group: str, member: Member) -> None:
    members = _members.setdefault(group, {})
    first = not members
    members[member] = None
    if first and _layer() is not None:
        await (await _relay()).join(group)


async def leave(group: str, member: Member) -> None:
    members = _members.get(group)
    if members is None or member not in members:
        return
    del members[member]
    if not members:
        del _members[group]
        if _layer() is not None:
            relay = await _relay()
            await relay.leave(group)
            if not _members:
                await _close(relay)


async def send(group: str, event: dict, *, published: bool = False) -> None:
    """Hand `event` to every member of `group` here, then to the other processes' members.

    The other processes' copy is queued (see `_Outbox`); `published=True` waits until it
    has gone to Redis, for a caller whose event loop ends right after (`async_to_sync`)."""
    await deliver_here(group, event)
    layer = _layer()
    if layer is not None:
        try:
            outbox = _outbox(layer)
            # "process" first: its packed bytes then start with this process's id (see _Relay.drop_own).
            await outbox.put(group, {"process": _PROCESS, "type": RELAYED, "group": group, "event": event})
            if published:
                await outbox.flushed()
        except Exception:
            # This process's sockets have it; other processes' tabs see a `seq` gap and
            # resynchronise from `conversation.state`.
            logger.warning("frame not relayed to other processes", exc_info=True, extra={"group": group})


async def deliver_here(group: str, event: dict) -> None:
    members = _members.get(group)
    if not members:
        return
    for member in list(members):
        try:
            await member.deliver(event)
        except Exception:
            # A socket that cannot take a frame is closing; the others must still get it.
            logger.warning("frame not delivered to a socket", exc_info=True, extra={"group": group})


async def flushed() -> None:
    """Wait until this loop's frames for other processes have all gone to Redis (at shutdown)."""
    outbox = _outboxes.get(asyncio.get_running_loop())
    if outbox is not None:
        await outbox.flushed()


def _outbox(layer) -> _Outbox:
    loop = asyncio.get_running_loop()
    outbox = _outboxes.get(loop)
    if outbox is None or outbox.layer is not layer:  # (a test's settings made a new layer)
        for old in [old for old in _outboxes if old.is_closed()]:
            del _outboxes[old]
        outbox = _outboxes[loop] = _Outbox(layer)
    return outbox


class _Outbox:
    """This process's frames for the other processes, published in pipelines.

    channels_redis's `group_send` publishes under a lock held for the whole round trip,
    so a process published one frame per round trip, and every reply's next delta
    waited for its previous one's turn: 200 replies on one process with Redis had an
    added p50 of 60 ms against 7 ms without (bench §1). Here a frame is queued and the
    call returns; one task publishes whatever has queued, in order, as one pipeline
    per round trip (PUBLISH keeps its meaning: Redis runs a pipeline's commands in
    order). Only when `LIMIT` frames wait, because Redis is slower than the replies,
    does a sender wait for room: a slow Redis slows the replies down (their deltas
    coalesce) instead of filling the memory.

    It uses the pub/sub layer's own channel names, shards, serializer and connections
    (channels_redis 4.3), so the other processes' relays read what `group_send` would
    have sent."""

    LIMIT = 5000

    def __init__(self, layer) -> None:
        loop_layer = layer._get_layer()
        for name in ("_get_group_channel_name", "_get_shard"):
            if not hasattr(loop_layer, name):  # fail loudly on an upgrade
                raise RuntimeError(f"channels_redis's pub/sub layer no longer has {name}: chat/fanout.py must be adapted")
        self.layer = layer
        self.loop_layer = loop_layer
        self.queued: list[tuple[object, str, bytes]] = []
        self.publisher: asyncio.Task | None = None
        self.room = asyncio.Event()
        self.room.set()
        self.failing = False

    async def put(self, group: str, message: dict) -> None:
        channel = self.loop_layer._get_group_channel_name(group)
        self.queued.append((self.loop_layer._get_shard(channel), channel, self.layer.serialize(message)))
        if self.publisher is None:
            self.publisher = asyncio.create_task(self._publish(), name="fanout-publish")
        if len(self.queued) >= self.LIMIT:
            self.room.clear()
            await self.room.wait()

    async def flushed(self) -> None:
        """Wait until every queued frame has been published (or given up on)."""
        while self.publisher is not None:
            await asyncio.shield(self.publisher)

    async def _publish(self) -> None:
        try:
            while self.queued:
                batch, self.queued = self.queued, []
                self.room.set()
                shards: dict[object, list[tuple[str, bytes]]] = {}
                for shard, channel, data in batch:
                    shards.setdefault(shard, []).append((channel, data))
                for shard, frames in shards.items():
                    await self._publish_on(shard, frames)
        finally:
            self.publisher = None

    async def _publish_on(self, shard, frames: list[tuple[str, bytes]]) -> None:
        try:
            shard._ensure_redis()
            pipeline = shard._redis.pipeline(transaction=False)
            for channel, data in frames:
                pipeline.publish(channel, data)
            await pipeline.execute()
        except Exception:
            # This process's sockets have these frames; other processes' tabs see a `seq`
            # gap and resynchronise from `conversation.state`. Said once per outage.
            if not self.failing:
                logger.warning("frames not relayed to other processes", exc_info=True, extra={"frames": len(frames)})
            self.failing = True
        else:
            if self.failing:
                logger.info("frames are relayed to other processes again")
            self.failing = False


def members(group: str) -> int:
    """How many sockets of this process are in `group` (for tests and health)."""
    return len(_members.get(group, ()))


async def _relay() -> _Relay:
    """This loop's relay, started on first use. When it cannot start (Redis is down), the
    caller gets the error, and the next caller tries again."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        for old in [old for old in _relays if old.is_closed()]:
            del _relays[old]
        relay = _relays[loop] = _Relay()
        relay.ready = loop.create_task(relay.start(), name="fanout-relay-start")
    try:
        await asyncio.shield(relay.ready)  # a joiner that is cancelled does not cancel the start
    except Exception:
        if _relays.get(loop) is relay:
            del _relays[loop]
        raise
    return relay


async def _close(relay: _Relay) -> None:
    """End a relay whose process has no member left; the next socket to join starts a new one.

    A cancelled pub/sub receive unsubscribes its channel and loses nothing: the
    process has no socket left to give a message to."""
    loop = asyncio.get_running_loop()
    if _relays.get(loop) is relay:
        del _relays[loop]
    relay.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay.task


class _Subscription:
    """Groups to subscribe to in one command, and its outcome for every joiner waiting on it."""

    def __init__(self) -> None:
        self.channels: list[str] = []
        self.sent: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task | None = None


class _Relay:
    """This process's one member of the layer's groups: receives other processes' events."""

    def __init__(self) -> None:
        self.channel = ""
        self.ready: asyncio.Task | None = None  # the start
        self.task: asyncio.Task | None = None  # the listener
        self.subscribing: dict[object, _Subscription] = {}  # by shard: the groups of its next SUBSCRIBE

    async def start(self) -> None:
        layer = _layer()
        self.channel = await layer.new_channel()
        self.drop_own(layer)
        self.task = asyncio.create_task(self._listen(), name="fanout-relay")

    @staticmethod
    def drop_own(layer) -> None:
        """Drop this process's own frames as Redis hands them back, before they are queued
        and decoded.

        The process is subscribed to each group for its own sockets, so every frame it
        publishes comes back to it. Each one was queued for the relay's task, woke it,
        was unpacked (the frame's text, twice with a `ref`) and then skipped: with a tab
        on each of two processes, half of what a process received. Its packed bytes start
        with this process's id (`send` puts it first), which the shard's receiver checks.
        Where the serializer encrypts or prefixes messages, the prefix is not found and
        `_listen` skips them after decoding, as before."""
        packed = layer.serialize({"process": _PROCESS, "type": RELAYED, "group": "", "event": None})  # send's shape
        mark = packed.find(_PROCESS.encode())
        if mark < 0:
            return
        own = packed[:mark + len(_PROCESS)]
        loop_layer = layer._get_layer()
        if not hasattr(loop_layer, "_shards"):  # fail loudly on an upgrade
            raise RuntimeError("channels_redis's pub/sub layer no longer has _shards: chat/fanout.py must be adapted")
        for shard in loop_layer._shards:
            if getattr(shard, "drops_own", None) == own:
                continue
            receive = shard._receive_message

            def receive_unless_own(message, receive=receive) -> None:
                data = message.get("data") if message is not None else None
                if not (isinstance(data, bytes) and data.startswith(own)):
                    receive(message)

            shard._receive_message = receive_unless_own
            shard.drops_own = own

    async def join(self, group: str) -> None:
        """Subscribe this process to `group`, in one SUBSCRIBE with the groups joined meanwhile.

        channels_redis's `group_add` subscribes under its shard's lock, one group at a
        time, each taking a turn or two of the event loop: 200 conversations started in
        the same second over Redis waited 0.8 s on average (up to 1.8 s) for the lock
        before their first token. Here the groups joined while a SUBSCRIBE is on its way
        go out together in the next one. As with `group_add`, this returns once the
        command is sent."""
        loop_layer = _layer()._get_layer()
        channel = loop_layer._get_group_channel_name(group)
        loop_layer.groups.setdefault(channel, set()).add(self.channel)  # what group_add records
        shard = loop_layer._get_shard(channel)
        batch = self.subscribing.get(shard)
        if batch is None:
            batch = self.subscribing[shard] = _Subscription()
            batch.task = asyncio.create_task(self._subscribe(shard, batch), name="fanout-subscribe")
        batch.channels.append(channel)
        await asyncio.shield(batch.sent)

    async def _subscribe(self, shard, batch: _Subscription) -> None:
        async with shard._lock:  # after the batch before this one, and any unsubscribe
            if self.subscribing.get(shard) is batch:
                del self.subscribing[shard]  # groups joined from now on wait for the next one
            try:
                shard._ensure_redis()
                shard._ensure_receiver()
                new = [channel for channel in dict.fromkeys(batch.channels) if channel not in shard._subscribed_to]
                if new:
                    await shard._pubsub.subscribe(*new)
                    shard._subscribed_to.update(new)
            except BaseException as error:
                batch.sent.set_exception(error)
                batch.sent.exception()  # retrieved: each joiner raises it
                if not isinstance(error, Exception):
                    raise
            else:
                batch.sent.set_result(None)

    async def leave(self, group: str) -> None:
        await _layer().group_discard(group, self.channel)
        if group in _members:  # a socket joined while the discard was on its way: stay a member
            await self.join(group)

    async def _listen(self) -> None:
        layer = _layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # a message that does not decode: the tabs repair the gap
                logger.warning("fan-out relay could not read a message", exc_info=True)
                continue
            if message.get("type") != RELAYED or message.get("process") == _PROCESS:
                continue  # this process delivered its own events directly
            await deliver_here(message["group"], message["event"])
