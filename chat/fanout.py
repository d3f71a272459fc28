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


async def send(group: str, event: dict) -> None:
    """Hand `event` to every member of `group` here, then to the other processes' members."""
    await deliver_here(group, event)
    layer = _layer()
    if layer is not None:
        try:
            await layer.group_send(group, {"type": RELAYED, "group": group, "process": _PROCESS, "event": event})
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


class _Relay:
    """This process's one member of the layer's groups: receives other processes' events."""

    def __init__(self) -> None:
        self.channel = ""
        self.ready: asyncio.Task | None = None  # the start
        self.task: asyncio.Task | None = None  # the listener

    async def start(self) -> None:
        self.channel = await _layer().new_channel()
        self.task = asyncio.create_task(self._listen(), name="fanout-relay")

    async def join(self, group: str) -> None:
        await _layer().group_add(group, self.channel)

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
