"""Groups of sockets: delivered in this process by a direct call, elsewhere once per process.

Channels' groups cost a channel-layer message per socket and per frame, and each
message wakes the socket's consumer task on its way in: with a delta per token, that
was most of the relay's CPU under load (docs/benchmarks.md). So a socket joins its
groups here, with itself as the member. A frame for a group is handed to the members
in this process directly, in order, and the channel layer carries it only to the other
processes: each process is one member of the layer's group (its relay channel), joined
when its first socket joins and left when its last one leaves, so a frame costs one
layer message per process that has watchers, not one per socket.

With the in-memory layer there are no other processes, and the layer is not used at
all for fan-out. Events that must reach a socket by its own channel (a reply's snapshot,
a resume timer) still go through the layer (chat/events.py).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Protocol

from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger(__name__)

RELAYED = "fanout.relay"  # the channel-layer event that carries a group's event to another process
CLOSED = "fanout.closed"  # a relay to itself: its process has no member left, end the read loop
CLOSE_TIMEOUT = 5.0


class Member(Protocol):
    """A socket: its own channel (requests' answers name it) and how it takes an event."""

    channel_name: str

    async def deliver(self, event: dict) -> None: ...


# The members of each group in this process. A set keeps no order; a dict does, and
# order is what tabs of one user see when two events follow each other.
_members: dict[str, dict[Member, None]] = {}
_relays: dict[asyncio.AbstractEventLoop, _Relay] = {}
_PROCESS = secrets.token_hex(8)  # tells this process's own relayed events from others'


def _crosses_processes() -> bool:
    return not isinstance(get_channel_layer(), InMemoryChannelLayer)


async def join(group: str, member: Member) -> None:
    members = _members.setdefault(group, {})
    first = not members
    members[member] = None
    if first and _crosses_processes():
        await (await _relay()).join(group)


async def leave(group: str, member: Member) -> None:
    members = _members.get(group)
    if members is None or member not in members:
        return
    del members[member]
    if not members:
        del _members[group]
        if _crosses_processes():
            relay = await _relay()
            await relay.leave(group)
            if not _members:
                await _close(relay)


async def send(group: str, event: dict) -> None:
    """Hand `event` to every member of `group` here, then to the other processes' members."""
    await deliver_here(group, event)
    if _crosses_processes():
        try:
            await get_channel_layer().group_send(group, {"type": RELAYED, "group": group, "process": _PROCESS,
                                                         "event": event})
        except Exception:
            # This process's sockets have it; other processes' tabs resynchronise from
            # `conversation.state` when they reconnect (deltas are numbered).
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
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        for old in [old for old in _relays if old.is_closed()]:
            del _relays[old]
        relay = _relays[loop] = _Relay()
        await relay.start()
    else:
        await relay.started.wait()
    return relay


async def _close(relay: _Relay) -> None:
    """End a relay whose process has no member left: with a message, not a cancel.

    With Redis, every process-local channel shares one real channel, and a receive
    cancelled mid-read can lose a message meant for another socket of this process,
    or never end (channels_redis). So the relay is told to stop and returns between
    two reads; the next socket to join starts a new one."""
    loop = asyncio.get_running_loop()
    if _relays.get(loop) is relay:
        del _relays[loop]
    try:
        await get_channel_layer().send(relay.channel, {"type": CLOSED})
        await asyncio.wait_for(asyncio.shield(relay.task), CLOSE_TIMEOUT)
    except Exception:
        relay.task.cancel()


class _Relay:
    """This process's one member of the layer's groups: receives other processes' events."""

    def __init__(self) -> None:
        self.channel = ""
        self.started = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        # The default prefix matters with Redis: every process-local channel must share
        # one real channel, or one blocking receive starves the others.
        self.channel = await get_channel_layer().new_channel()
        self.task = asyncio.create_task(self._listen(), name="fanout-relay")
        self.started.set()

    async def join(self, group: str) -> None:
        await get_channel_layer().group_add(group, self.channel)

    async def leave(self, group: str) -> None:
        await get_channel_layer().group_discard(group, self.channel)
        if group in _members:  # a socket joined while the discard was on its way: stay a member
            await self.join(group)

    async def _listen(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                if asyncio.current_task().cancelling():
                    return  # the loop is closing: a cancelled read may surface as another error
                logger.warning("fan-out relay channel failed", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if message.get("type") == CLOSED:
                return
            if message.get("type") != RELAYED or message.get("process") == _PROCESS:
                continue  # this process delivered its own events directly
            await deliver_here(message["group"], message["event"])
