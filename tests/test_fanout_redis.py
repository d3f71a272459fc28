"""Frames between processes go through Redis pub/sub: none dropped, in order, none twice.

"Another process" is a second pub/sub layer object with its own connections, sending
`fanout.relay` events as chat/fanout.py does in another process.
"""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer

from chat import fanout
from tests.redis_layer import REDIS_URL, redis_layer_settings, require_redis


@pytest.fixture
def layers(settings):
    require_redis()
    settings.CHANNEL_LAYERS = redis_layer_settings()
    yield settings.CHANNEL_LAYERS
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class Tab:
    """A member of a group that records what it is handed."""

    def __init__(self, name: str, expected: int = 0):
        self.channel_name = name
        self.events: list[dict] = []
        self.expected = expected
        self.all_in = asyncio.Event()

    async def deliver(self, event: dict) -> None:
        self.events.append(event)
        if len(self.events) >= self.expected:
            self.all_in.set()


def other_process(layers: dict) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer(**layers["fanout"]["CONFIG"])


async def subscribers(layers: dict, group: str) -> int:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        name = f"{layers['fanout']['CONFIG']['prefix']}__group__{group}"
        return dict(await client.pubsub_numsub(name))[name.encode()]
    finally:
        await client.aclose()


async def test_the_fanout_layer_is_redis_pubsub(layers):
    assert type(get_channel_layer("fanout")).__name__ == "RedisPubSubChannelLayer"


async def test_a_burst_from_another_process_arrives_whole_and_in_order(layers):
    # 5,000 frames sent as fast as one connection can: the list-based layer held at
    # most its capacity (1,000 here, 5,000 in production) per process and dropped the rest.
    count = 5000
    tab = Tab("tab-1", expected=count)
    await fanout.join("conversation.burst", tab)
    other = other_process(layers)
    try:
        for seq in range(count):
            await other.group_send("conversation.burst", {"type": fanout.RELAYED, "group": "conversation.burst",
                                                          "process": "elsewhere", "event": {"seq": seq}})
        await asyncio.wait_for(tab.all_in.wait(), 30)
        assert [event["seq"] for event in tab.events] == list(range(count))
    finally:
        await fanout.leave("conversation.burst", tab)
        await other.flush()


async def test_a_frame_sent_here_reaches_each_local_tab_once_and_the_other_process_once(layers):
    here = Tab("tab-here", expected=2)
    await fanout.join("user.7", here)
    other = other_process(layers)
    elsewhere = await other.new_channel()
    await other.group_add("user.7", elsewhere)
    try:
        await fanout.send("user.7", {"type": "frame.send", "text": "hello"})
        relayed = await asyncio.wait_for(other.receive(elsewhere), 10)
        assert relayed["event"] == {"type": "frame.send", "text": "hello"}
        assert relayed["process"] != "elsewhere"
        # The relay of this process hears its own PUBLISH too, and must not hand it over
        # again: Redis delivers in publish order, so a second "hello" would come before "after".
        await other.group_send("user.7", {"type": fanout.RELAYED, "group": "user.7", "process": "elsewhere",
                                          "event": {"type": "frame.send", "text": "after"}})
        await asyncio.wait_for(here.all_in.wait(), 10)
        assert [event["text"] for event in here.events] == ["hello", "after"]
    finally:
        await fanout.leave("user.7", here)
        await other.flush()


async def test_the_last_tab_leaving_unsubscribes_the_process(layers):
    first, second = Tab("tab-a"), Tab("tab-b")
    await fanout.join("conversation.c1", first)
    await fanout.join("conversation.c1", second)
    assert await subscribers(layers, "conversation.c1") == 1, "one subscription per process, not per tab"
    await fanout.leave("conversation.c1", first)
    assert await subscribers(layers, "conversation.c1") == 1
    await fanout.leave("conversation.c1", second)
    assert await subscribers(layers, "conversation.c1") == 0
    assert fanout.members("conversation.c1") == 0
