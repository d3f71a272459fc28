"""A socket's dispatch loop that reads its own channel only while something is due on it.

Channels' consumers keep a receive pending on their channel-layer channel for the
socket's whole life (`await_many_dispatch`): two tasks, and in the layer an
asyncio.Queue with its four deques: about 6 KB of every idle socket (RSS, bench §4). A chat socket
hears nothing on its channel except answers it asked for: a reply's snapshot while it
joins a conversation mid-reply, and its own resume timers (chat/resume.py). Group
events reach it by fan-out (chat/fanout.py), not through this channel.

Messages sent to the channel while nobody reads it wait in the layer, as they would
for a busy consumer. Only handlers, which run in this loop, make the channel due, so
the loop never needs waking while it waits on the socket alone.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Receive = Callable[[], Awaitable[dict]]


async def dispatch_events(receive: Receive, channel_receive: Receive, dispatch: Callable[[dict], Awaitable[None]],
                          channel_due: Callable[[], bool]) -> None:
    """Dispatch the socket's events, and the channel's while `channel_due()`, one at a time
    and in the order they come (as `await_many_dispatch` does), until dispatch raises."""
    from_socket: asyncio.Future | None = None
    from_channel: asyncio.Future | None = None
    try:
        while True:
            if from_channel is None and not channel_due():
                message = await (from_socket if from_socket is not None else receive())
                from_socket = None
                await dispatch(message)
                continue
            if from_socket is None:
                from_socket = asyncio.ensure_future(receive())
            if from_channel is None:
                from_channel = asyncio.ensure_future(channel_receive())
            await asyncio.wait((from_socket, from_channel), return_when=asyncio.FIRST_COMPLETED)
            if from_socket.done():
                message, from_socket = from_socket.result(), None
                await dispatch(message)
            if from_channel.done():
                message, from_channel = from_channel.result(), None
                await dispatch(message)
            if from_channel is not None and not channel_due():
                late, from_channel = await _cancel(from_channel), None  # one it had not taken stays in the layer
                if late is not None:
                    await dispatch(late)
    finally:
        for task in (from_socket, from_channel):
            if task is not None:
                await _cancel(task)


async def _cancel(task: asyncio.Future) -> dict | None:
    """Cancel a receive; what it returns if it had its message already."""
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return None
