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
from chat.redis_link import Publisher, Subscriber
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
    await fanout.join("user.fanout-both", here)
    other = other_process(layers)
    elsewhere = await other.new_channel()
    await other.group_add("user.fanout-both", elsewhere)
    try:
        await fanout.send("user.fanout-both", {"type": "frame.send", "text": "hello"})
        relayed = await asyncio.wait_for(other.receive(elsewhere), 10)
        assert relayed["event"] == {"type": "frame.send", "text": "hello"}
        assert relayed["process"] != "elsewhere"
        # The relay of this process hears its own PUBLISH too, and must not hand it over
        # again: Redis delivers in publish order, so a second "hello" would come before "after".
        await other.group_send("user.fanout-both", {"type": fanout.RELAYED, "group": "user.fanout-both", "process": "elsewhere",
                                          "event": {"type": "frame.send", "text": "after"}})
        await asyncio.wait_for(here.all_in.wait(), 10)
        assert [event["text"] for event in here.events] == ["hello", "after"]
    finally:
        await fanout.leave("user.fanout-both", here)
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


async def test_frames_sent_here_reach_the_other_process_all_and_in_order(layers):
    """Sent without waiting for a round trip each (chat/fanout.py's outbox): none lost,
    none reordered, also past the outbox's limit, where senders wait for room."""
    other = other_process(layers)
    elsewhere = await other.new_channel()
    await other.group_add("conversation.many", elsewhere)
    count = fanout._Outbox.LIMIT + 1000
    try:
        for seq in range(count):
            await fanout.send("conversation.many", {"type": "frame.send", "seq": seq})
        received = [(await asyncio.wait_for(other.receive(elsewhere), 10))["event"]["seq"] for _ in range(count)]
        assert received == list(range(count))
    finally:
        await other.flush()


async def test_a_process_drops_its_own_frames_coming_back_before_decoding_them(layers, monkeypatch):
    """Subscribed for its own tab, the process hears its own frames again from Redis: they
    are dropped as they arrive (the tab had them directly), the other process's are not."""
    layer = get_channel_layer("fanout")
    decoded = []
    deserialize = layer.deserialize
    monkeypatch.setattr(layer, "deserialize", lambda data: decoded.append(data) or deserialize(data))
    tab = Tab("tab-echo", expected=51)
    await fanout.join("conversation.echo", tab)
    other = other_process(layers)
    try:
        for seq in range(50):
            await fanout.send("conversation.echo", {"type": "frame.send", "seq": seq})
        await fanout.flushed()  # published: Redis hands them back before the other process's frame
        await other.group_send("conversation.echo", {"type": fanout.RELAYED, "group": "conversation.echo",
                                                     "process": "elsewhere", "event": {"seq": 50}})
        await asyncio.wait_for(tab.all_in.wait(), 10)
        assert [event["seq"] for event in tab.events] == list(range(51))
        assert len(decoded) == 1
    finally:
        await fanout.leave("conversation.echo", tab)
        await other.flush()


async def test_redis_down_loses_no_local_frame_and_blocks_no_sender(settings, caplog):
    layers = redis_layer_settings()
    dead = {"address": "redis://127.0.0.1:9/0", "socket_timeout": 1, "socket_connect_timeout": 1}
    layers["fanout"]["CONFIG"]["hosts"] = [dead]
    settings.CHANNEL_LAYERS = layers
    here = Tab("tab-here", expected=5)
    fanout._members["conversation.down"] = {here: None}  # joined before Redis went away
    try:
        for text in ("a", "b", "c"):
            await asyncio.wait_for(fanout.send("conversation.down", {"type": "frame.send", "text": text}), 5)
        assert [event["text"] for event in here.events] == ["a", "b", "c"]
        await asyncio.wait_for(fanout.flushed(), 10)  # given up on, not waiting for Redis
        for text in ("d", "e"):  # right after the failure: dropped without another try, and said once
            await asyncio.wait_for(fanout.send("conversation.down", {"type": "frame.send", "text": text}), 1)
        await asyncio.wait_for(fanout.flushed(), 10)
        assert [event["text"] for event in here.events] == ["a", "b", "c", "d", "e"]
        warnings = [r for r in caplog.records if r.getMessage() == "frames not relayed to other processes"]
        assert len(warnings) == 1
    finally:
        fanout._members.pop("conversation.down", None)
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def test_groups_joined_at_once_are_subscribed_together_and_all_hear_the_other_process(layers, monkeypatch):
    first = Tab("tab-first")
    await fanout.join("conversation.first", first)  # the relay is up, its connection made
    (subscriber,) = fanout._relays[asyncio.get_running_loop()].subscribers.values()
    commands = []
    write = subscriber.link.write

    def counted(data: bytes) -> None:
        if b"SUBSCRIBE" in data:
            commands.append(data.count(b"$") - 1)  # channels in the command
        write(data)

    monkeypatch.setattr(subscriber.link, "write", counted)
    tabs = {f"conversation.g{i}": Tab(f"tab-{i}", expected=1) for i in range(200)}
    other = other_process(layers)
    try:
        await asyncio.gather(*(fanout.join(group, tab) for group, tab in tabs.items()))
        assert sum(commands) == 200 and len(commands) <= 3, commands
        for group in tabs:
            await other.group_send(group, {"type": fanout.RELAYED, "group": group, "process": "elsewhere",
                                           "event": {"type": "frame.send", "text": group}})
        await asyncio.wait_for(asyncio.gather(*(tab.all_in.wait() for tab in tabs.values())), 10)
        assert all(tab.events == [{"type": "frame.send", "text": group}] for group, tab in tabs.items())
        assert await subscribers(layers, "conversation.g199") == 1
    finally:
        for group, tab in [("conversation.first", first), *tabs.items()]:
            await fanout.leave(group, tab)
        await other.flush()


async def kill_connection(link) -> None:
    """Make Redis close one of this process's connections, as a Redis restart or failover does."""
    host, port = link.writer.get_extra_info("sockname")[:2]
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        assert await client.client_kill_filter(_type=None, addr=f"{host}:{port}") == 1
    finally:
        await client.aclose()


async def wait_until(condition, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_frames_queued_in_one_turn_of_the_loop_go_to_redis_in_one_write(layers, monkeypatch):
    other = other_process(layers)
    elsewhere = await other.new_channel()
    await other.group_add("conversation.batched", elsewhere)
    try:
        await fanout.send("conversation.batched", {"type": "frame.send", "seq": -1})  # connects
        await fanout.flushed()
        (publisher,) = fanout._outboxes[asyncio.get_running_loop()].publishers.values()
        writes = []
        write = publisher.link.write
        monkeypatch.setattr(publisher.link, "write", lambda data: writes.append(data.count(b"PUBLISH")) or write(data))
        for seq in range(100):
            await fanout.send("conversation.batched", {"type": "frame.send", "seq": seq})
        await fanout.flushed()
        assert writes == [100]
        received = [(await asyncio.wait_for(other.receive(elsewhere), 10))["event"]["seq"] for _ in range(101)]
        assert received == list(range(-1, 100))
    finally:
        await other.flush()


async def test_a_subscription_cut_by_redis_is_made_again_and_hears_the_other_process(layers, caplog):
    tab = Tab("tab-cut")
    await fanout.join("conversation.cut", tab)
    (subscriber,) = fanout._relays[asyncio.get_running_loop()].subscribers.values()
    other = other_process(layers)
    try:
        cut = subscriber.link
        await kill_connection(cut)

        async def resubscribed() -> bool:
            return subscriber.link not in (None, cut) and await subscribers(layers, "conversation.cut") == 1

        await wait_until(resubscribed)
        tab.expected, tab.all_in = 1, asyncio.Event()
        await other.group_send("conversation.cut", {"type": fanout.RELAYED, "group": "conversation.cut",
                                                    "process": "elsewhere", "event": {"text": "after the cut"}})
        await asyncio.wait_for(tab.all_in.wait(), 10)
        assert tab.events == [{"text": "after the cut"}]
        assert any(r.getMessage().startswith("fan-out subscription lost") for r in caplog.records)
    finally:
        await fanout.leave("conversation.cut", tab)
        await other.flush()


async def test_a_publishing_connection_redis_closes_while_idle_loses_no_frame(layers, caplog):
    """Redis closes idle connections (its `timeout`; 300 s on Heroku): that is no outage,
    and the next frame goes out on a new connection instead of being dropped."""
    other = other_process(layers)
    elsewhere = await other.new_channel()
    await other.group_add("conversation.idle", elsewhere)
    try:
        await fanout.send("conversation.idle", {"type": "frame.send", "seq": 0})
        await fanout.flushed()
        (publisher,) = fanout._outboxes[asyncio.get_running_loop()].publishers.values()
        await kill_connection(publisher.link)
        await wait_until(lambda: asyncio.sleep(0, publisher.link is None))
        await fanout.send("conversation.idle", {"type": "frame.send", "seq": 1})
        received = [(await asyncio.wait_for(other.receive(elsewhere), 10))["event"]["seq"] for _ in range(2)]
        assert received == [0, 1]
        assert "frames not relayed to other processes" not in [r.getMessage() for r in caplog.records]
    finally:
        await other.flush()


async def test_a_publishing_connection_idle_for_long_is_replaced_before_the_next_frame(layers):
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def received(data: bytes) -> None:
        got.append(data)
        arrived.set()

    host = layers["fanout"]["CONFIG"]["hosts"][0]
    subscriber = Subscriber(host, received)
    publisher = Publisher(host, idle_after=0.05)
    await subscriber.start()
    try:
        await subscriber.subscribe(b"test-idle-replaced")
        await publisher.publish(b"test-idle-replaced", b"first")
        await publisher.flushed()
        first_link = publisher.link
        await asyncio.sleep(0.1)  # longer than idle_after
        await publisher.publish(b"test-idle-replaced", b"second")
        await publisher.flushed()
        assert publisher.link is not first_link and first_link.writer.is_closing()
        await wait_until(lambda: asyncio.sleep(0, len(got) == 2))
        assert got == [b"first", b"second"]
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_subscription_that_goes_silent_is_pinged_then_made_again(layers, caplog):
    """A peer or proxy gone without closing the connection: the PING is not answered, the
    connection is dropped and made again, and messages arrive again."""
    got: list[bytes] = []
    host = layers["fanout"]["CONFIG"]["hosts"][0]

    async def received(data: bytes) -> None:
        got.append(data)

    subscriber = Subscriber(host, received, ping_after=0.2, max_backoff=0.2)
    await subscriber.start()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await subscriber.subscribe(b"test-silent")
        silent = subscriber.link
        await client.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # nothing answered for 1.5 s

        async def replaced() -> bool:
            return subscriber.link not in (None, silent)

        await wait_until(replaced, 15)
        await wait_until(lambda: asyncio.sleep(0, subscriber.told == {b"test-silent"}), 15)

        async def heard() -> bool:
            await client.publish("test-silent", b"again")
            return got == [b"again"] or len(got) > 1

        await wait_until(heard, 15)
        assert set(got) == {b"again"}
        assert any(r.getMessage() == "fan-out subscription silent: connecting again" for r in caplog.records)
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()
        await subscriber.close()
