"""The chat over the real Redis channel layer: the same guarantees as in memory."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from tests.redis_layer import redis_layer_settings, require_redis
from tests.sockets import ChatSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


@pytest.fixture(autouse=True)
def redis_layer(settings):
    require_redis()
    settings.CHANNEL_LAYERS = redis_layer_settings()
    yield
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def test_the_layer_in_use_is_redis(make_user):
    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"


def test_redis_replies_are_parsed_by_hiredis():
    """Every frame relayed between processes is a Redis reply to parse: hiredis does it in C
    (pinned in requirements.txt); redis-py silently falls back to Python without it."""
    from redis.asyncio.connection import Connection

    assert type(Connection()._parser).__name__ == "_AsyncHiredisParser"


async def test_tab_joining_mid_reply_gets_exact_text_over_redis(make_user):
    user = await sync_to_async(make_user)("alice")
    first, second = await ChatSocket.connect(user), await ChatSocket.connect(user)
    await first.send("message.send", conversation=None, content="over redis #tokens=40 #delay=0.02")
    created = await second.receive("conversation.created")
    await first.receive("reply.delta")
    await second.send("conversation.open", conversation=created["conversation"]["id"])
    state = await second.receive("conversation.state")
    generating = state["generating"]
    assert generating is not None, "the reply was in progress when the tab joined"
    seen, expected_seq = generating["content"], generating["seq"]
    while (frame := await second.next_frame())["type"] != "reply.completed":
        if frame["type"] == "reply.delta":
            assert frame["seq"] == expected_seq, "deltas must follow the state without gap or duplicate"
            seen += frame["delta"]
            expected_seq += 1
    assert seen == frame["message"]["content"] == " ".join(f"w{i}" for i in range(40))
    await first.close()
    await second.close()


async def test_stop_from_another_tab_over_redis(make_user):
    user = await sync_to_async(make_user)("alice")
    first, second = await ChatSocket.connect(user), await ChatSocket.connect(user)
    await first.send("message.send", conversation=None, content="long one #tokens=300 #delay=0.02")
    created = await first.receive("conversation.created")
    await first.receive("reply.delta")
    await second.send("generation.stop", conversation=created["conversation"]["id"])
    _, final = await first.reply_text()
    assert final["type"] == "reply.completed" and final["stopped"] is True
    assert final["message"]["status"] == "stopped"
    assert 0 < len(final["message"]["content"].split()) < 300
    await first.close()
    await second.close()
