"""Two real daphne processes sharing Redis: one user, a tab on each, nothing lost."""
from __future__ import annotations

import os
import signal
import uuid

import pytest

from chat.client.tab import Tab
from tests.fake_model_server import FakeModelServer
from tests.live_server import LiveServer, server_env
from tests.redis_layer import REDIS_URL, require_redis

pytestmark = pytest.mark.slow


@pytest.fixture
def model_server():
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def two_servers(tmp_path, model_server):
    require_redis()
    env = server_env(tmp_path, model_server.url, REDIS_URL=REDIS_URL, REDIS_PREFIX=f"mp-{uuid.uuid4().hex[:8]}",
                     CHAT_REPLY_STALE_SECONDS="2")
    first, second = LiveServer(env), LiveServer(env)
    first.manage("migrate", "--noinput")
    token = first.create_token("alice")
    first.start()
    second.start()
    yield first, second, token
    first.stop()
    second.stop()


async def test_tab_on_each_process_sees_the_same_conversation(two_servers):
    first, second, token = two_servers
    tab1 = await Tab.open(first.ws_url, token)
    tab2 = await Tab.open(second.ws_url, token)
    await tab1.send("message.send", conversation=None, content="across processes #tokens=30 #delay=0.03")
    created = await tab2.receive("conversation.created")
    conversation_id = created["conversation"]["id"]
    first_delta = await tab1.receive("reply.delta", seq=0)
    await tab2.send("conversation.open", conversation=conversation_id)
    state = await tab2.receive("conversation.state")
    assert [m["role"] for m in state["messages"]] == ["user"]
    assert state["generating"] is not None, "the reply was still being written"
    text2, final2 = await tab2.follow_reply(state["generating"])
    text1, final1 = await tab1.follow_reply({"content": first_delta["delta"], "seq": 1})
    expected = " ".join(f"w{i}" for i in range(30))
    assert text1 == text2 == expected
    assert final1["message"]["content"] == final2["message"]["content"] == expected
    title1 = await tab1.receive("conversation.updated")
    title2 = await tab2.receive("conversation.updated")
    assert title1["conversation"]["title"] == title2["conversation"]["title"] != ""
    await tab1.close()
    await tab2.close()


async def test_stop_on_one_process_stops_the_reply_written_by_the_other(two_servers):
    first, second, token = two_servers
    tab1 = await Tab.open(first.ws_url, token)
    tab2 = await Tab.open(second.ws_url, token)
    await tab1.send("message.send", conversation=None, content="long #tokens=400 #delay=0.02")
    created = await tab1.receive("conversation.created")
    first_delta = await tab1.receive("reply.delta", seq=0)
    await tab2.send("generation.stop", conversation=created["conversation"]["id"])
    _, final = await tab1.follow_reply({"content": first_delta["delta"], "seq": 1})
    assert final["type"] == "reply.completed" and final["stopped"] is True
    assert 0 < len(final["message"]["content"].split()) < 400
    await tab1.close()
    await tab2.close()


async def test_closing_the_asking_tab_does_not_stop_the_reply(two_servers):
    first, second, token = two_servers
    tab1 = await Tab.open(first.ws_url, token)
    tab2 = await Tab.open(second.ws_url, token)
    await tab1.send("message.send", conversation=None, content="keep going #tokens=40 #delay=0.02")
    created = await tab1.receive("conversation.created")
    await tab1.receive("reply.delta")
    await tab1.close()
    await tab2.send("conversation.open", conversation=created["conversation"]["id"])
    state = await tab2.receive("conversation.state")
    text, final = await tab2.follow_reply(state["generating"])
    assert final["type"] == "reply.completed"
    assert text == final["message"]["content"] == " ".join(f"w{i}" for i in range(40))
    await tab2.close()


async def test_process_killed_mid_reply_leaves_reply_interrupted_and_conversation_usable(two_servers):
    first, second, token = two_servers
    tab1 = await Tab.open(first.ws_url, token)
    await tab1.send("message.send", conversation=None, content="doomed #tokens=400 #delay=0.02")
    created = await tab1.receive("conversation.created")
    conversation_id = created["conversation"]["id"]
    await tab1.receive("reply.delta")
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    tab2 = await Tab.open(second.ws_url, token)
    await tab2.send("conversation.open", conversation=conversation_id)
    state = await tab2.receive("conversation.state")
    if state["generating"] is not None:  # the claim's checkpoint, until the claim is stale
        state = await tab2.receive("conversation.state")
    assert state["generating"] is None
    assert [(m["role"], m.get("status")) for m in state["messages"]] == [("user", None), ("assistant", "interrupted")]
    await tab2.send("message.send", conversation=conversation_id, content="again #tokens=3")
    text, final = await tab2.follow_reply()
    assert final["type"] == "reply.completed" and text == "w0 w1 w2"
    await tab2.close()
