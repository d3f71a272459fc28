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
page repairs by asking for the conversation's state. The layer gives the channel names,
shards and serializer; the connections that publish and subscribe are
chat/redis_link.py's, which write and read Redis's protocol in bulk.

Without a `fanout` layer (the embedded in-memory default) there are no other
processes, and fan-out uses no layer at all. Events that must reach a socket by its
own channel (a reply's snapshot, a resume timer) go through the default layer
(chat/events.py).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Protocol

from channels.layers import channel_layers

from chat.redis_link import Publisher, Subscriber

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
            # "process" first: its packed bytes then start with this process's id (see own_prefix).
            await outbox.put(group, {"process": _PROCESS, "type": RELAYED, "group": group, "event": event})
            if published:
                await _retire(outbox)
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


async def _retire(outbox: _Outbox) -> None:
    """Publish what `outbox` holds, then close its connections: for a caller whose loop may
    end right after (`async_to_sync`). Frames sent meanwhile go to a new outbox."""
    loop = asyncio.get_running_loop()
    if _outboxes.get(loop) is outbox:
        del _outboxes[loop]
    await outbox.flushed()
    await outbox.close()


class _Outbox:
    """This process's frames for the other processes: one `Publisher` per Redis shard.

    channels_redis's `group_send` publishes under a lock held for the whole round trip,
    so a process published one frame per round trip, and every reply's next delta
    waited for its previous one's turn: 200 replies on one process with Redis had an
    added p50 of 60 ms against 7 ms without (bench §1). A publisher (chat/redis_link.py)
    writes the frames queued during one turn of the loop as one write and never waits
    for their replies; PUBLISH keeps its meaning, since Redis runs one connection's
    commands in order. Only when `LIMIT` frames wait, because Redis is slower than the
    replies, does a sender wait for room.

    It uses the pub/sub layer's own channel names, shards and serializer (channels_redis
    4.3), so the other processes read what `group_send` would have sent."""

    LIMIT = 5000

    def __init__(self, layer) -> None:
        self.layer = layer
        self.loop_layer = _loop_layer(layer)
        self.publishers = {shard: Publisher(shard.host, limit=self.LIMIT) for shard in self.loop_layer._shards}

    async def put(self, group: str, message: dict) -> None:
        shard, channel = _route(self.loop_layer, group)
        await self.publishers[shard].publish(channel, self.layer.serialize(message))

    async def flushed(self) -> None:
        """Wait until every queued frame has been published (or given up on)."""
        for publisher in self.publishers.values():
            await publisher.flushed()

    async def close(self) -> None:
        for publisher in self.publishers.values():
            await publisher.close()


def _loop_layer(layer):
    """The pub/sub layer's object for this loop, whose channel names and shards fan-out uses
    (channels_redis 4.3 internals): checked, so that an upgrade fails loudly."""
    loop_layer = layer._get_layer()
    for name in ("_get_group_channel_name", "_get_shard", "_shards"):
        if not hasattr(loop_layer, name):
            raise RuntimeError(f"channels_redis's pub/sub layer no longer has {name}: chat/fanout.py must be adapted")
    return loop_layer


def _route(loop_layer, group: str) -> tuple[object, bytes]:
    """The shard and the Redis channel of `group`, as the pub/sub layer's `group_send` has them."""
    channel = loop_layer._get_group_channel_name(group)
    return loop_layer._get_shard(channel), channel.encode()


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
    """End a relay whose process has no member left; the next socket to join starts a new one."""
    loop = asyncio.get_running_loop()
    if _relays.get(loop) is relay:
        del _relays[loop]
    await relay.close()


def own_prefix(layer) -> bytes | None:
    """The bytes that every frame this process publishes starts with, or None where the
    serializer hides them (encryption, a prefix of its own).

    The process is subscribed to each group for its own sockets, so every frame it
    publishes comes back to it. Decoding them only to skip them was, with a tab on each
    of two processes, half of what a process received; they are recognised by their
    first bytes instead (`send` puts this process's id first)."""
    packed = layer.serialize({"process": _PROCESS, "type": RELAYED, "group": "", "event": None})  # send's shape
    mark = packed.find(_PROCESS.encode())
    return packed[:mark + len(_PROCESS)] if mark >= 0 else None


class _Relay:
    """This process's subscription to the groups it has sockets in: one `Subscriber` per Redis
    shard (chat/redis_link.py), whose messages from other processes it hands to this
    process's members, in the order Redis pushed them."""

    def __init__(self) -> None:
        self.ready: asyncio.Task | None = None  # the start
        self.subscribers: dict[object, Subscriber] = {}
        self.own: bytes | None = None

    async def start(self) -> None:
        layer = _layer()
        self.layer, self.loop_layer = layer, _loop_layer(layer)
        self.own = own_prefix(layer)
        try:
            for shard in self.loop_layer._shards:
                subscriber = self.subscribers[shard] = Subscriber(shard.host, self._received)
                await subscriber.start()
        except BaseException:
            await self.close()
            raise

    def _subscriber(self, group: str) -> tuple[Subscriber, bytes]:
        shard, channel = _route(self.loop_layer, group)
        return self.subscribers[shard], channel

    async def join(self, group: str) -> None:
        """Subscribe this process to `group`: the groups joined during one turn of the loop
        go out as one SUBSCRIBE. channels_redis's `group_add` subscribed under its shard's
        lock, one group at a time, each taking a turn or two of the event loop: 200
        conversations started in the same second over Redis waited 0.8 s on average (up to
        1.8 s) for the lock before their first token. As with `group_add`, this returns
        once the command is written."""
        subscriber, channel = self._subscriber(group)
        await subscriber.subscribe(channel)

    async def leave(self, group: str) -> None:
        subscriber, channel = self._subscriber(group)
        subscriber.unsubscribe(channel)

    async def _received(self, data: bytes) -> None:
        if self.own is not None and data.startswith(self.own):
            return  # this process's own frame: its sockets had it directly
        try:
            message = self.layer.deserialize(data)
        except Exception:  # a message that does not decode: the tabs repair the gap
            logger.warning("fan-out relay could not read a message", exc_info=True)
            return
        if message.get("type") != RELAYED or message.get("process") == _PROCESS:
            return
        await deliver_here(message["group"], message["event"])

    async def close(self) -> None:
        for subscriber in self.subscribers.values():
            await subscriber.close()
