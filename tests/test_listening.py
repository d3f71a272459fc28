"""A socket reads its own channel only while an answer is due on it (consumers/listening.py)."""
from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from consumers.listening import dispatch_events
from tests.sockets import ChatSocket, create_user

pytestmark = pytest.mark.django_db(transaction=True)


class Loop:
    """A socket inbox, a channel and a dispatch that records what it got, one at a time."""

    def __init__(self) -> None:
        self.socket: asyncio.Queue = asyncio.Queue()
        self.channel: asyncio.Queue = asyncio.Queue()
        self.due = False
        self.got: list[str] = []
        self.inside = False
        self.channel_reads = 0

    async def channel_receive(self) -> dict:
        self.channel_reads += 1
        return await self.channel.get()

    async def dispatch(self, message: dict) -> None:
        assert not self.inside, "two events were dispatched at once"
        self.inside = True
        try:
            await asyncio.sleep(0)
            self.got.append(message["type"])
            if message["type"] == "join":
                self.due = True
            elif message["type"] == "snapshot":
                self.due = False
            elif message["type"] == "disconnect":
                raise StopConsumer
        finally:
            self.inside = False

    def run(self) -> asyncio.Task:
        return asyncio.ensure_future(dispatch_events(self.socket.get, self.channel_receive, self.dispatch,
                                                     lambda: self.due))

    async def until(self, count: int) -> None:
        while len(self.got) < count:
            await asyncio.sleep(0.001)


async def test_the_channel_is_read_only_while_an_answer_is_due_and_nothing_sent_meanwhile_is_lost():
    loop = Loop()
    task = loop.run()
    loop.channel.put_nowait({"type": "early"})  # not due yet: it waits in the layer
    loop.socket.put_nowait({"type": "ping"})
    await loop.until(1)
    await asyncio.sleep(0.01)
    assert loop.got == ["ping"] and loop.channel_reads == 0
    loop.socket.put_nowait({"type": "join"})  # a handler makes the channel due
    await loop.until(3)
    assert loop.got == ["ping", "join", "early"]
    loop.channel.put_nowait({"type": "snapshot"})  # the answer: no longer due
    await loop.until(4)
    loop.channel.put_nowait({"type": "late"})
    loop.socket.put_nowait({"type": "ping"})
    await loop.until(5)
    await asyncio.sleep(0.01)
    assert loop.got == ["ping", "join", "early", "snapshot", "ping"]
    assert loop.channel.qsize() == 1  # "late" was not taken by the cancelled read
    loop.socket.put_nowait({"type": "disconnect"})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(task, 1)


async def test_socket_and_channel_events_are_dispatched_one_at_a_time():
    loop = Loop()
    loop.due = True
    task = loop.run()
    for i in range(20):
        loop.socket.put_nowait({"type": f"frame {i}"})
        loop.channel.put_nowait({"type": f"answer {i}"})
    await loop.until(40)  # Loop.dispatch asserts that none overlaps another
    assert [t for t in loop.got if t.startswith("frame")] == [f"frame {i}" for i in range(20)]
    assert [t for t in loop.got if t.startswith("answer")] == [f"answer {i}" for i in range(20)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_idle_socket_keeps_no_receive_on_its_channel():
    """Channels' consumers keep one pending for their whole life: a queue of the layer per socket."""
    layer = get_channel_layer()
    before = set(layer.channels)
    socket = await ChatSocket.connect(await create_user())
    await socket.send("ping")
    await socket.receive("pong")
    assert set(layer.channels) == before
    await socket.close()
