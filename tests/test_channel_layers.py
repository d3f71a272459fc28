"""The embedded channel layer still expires what it must, just not on every message."""
from __future__ import annotations

import asyncio
import time

from config.channel_layers import SweepingInMemoryChannelLayer


async def test_expired_messages_and_their_channels_are_swept_at_most_once_per_interval():
    layer = SweepingInMemoryChannelLayer(expiry=0.05)
    layer.sweep_interval = 0.2
    layer._last_sweep = time.monotonic()  # as if it had just swept
    await layer.group_add("conversation.x", "specific.inmemory!stale")
    await layer.send("specific.inmemory!stale", {"type": "frame.send"})  # never read
    await asyncio.sleep(0.1)
    await layer.group_send("conversation.x", {"type": "frame.send"})  # within the interval: no sweep
    assert "specific.inmemory!stale" in layer.groups["conversation.x"]
    await asyncio.sleep(0.25)
    await layer.group_send("conversation.x", {"type": "frame.send"})  # past it: the stale channel goes
    assert "specific.inmemory!stale" not in layer.groups.get("conversation.x", {})


async def test_messages_are_delivered_as_by_the_stock_layer():
    layer = SweepingInMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("user.1", channel)
    await layer.group_send("user.1", {"type": "frame.send", "text": "hi"})
    assert await layer.receive(channel) == {"type": "frame.send", "text": "hi"}
