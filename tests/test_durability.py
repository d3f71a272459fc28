"""Restarts and crashes lose nothing (issue 15): real daphne processes over the real Redis.

- SIGTERM (a Heroku restart, a deploy): within CHAT_SHUTDOWN_TIMEOUT every running reply
  is stored as interrupted with its text so far, its conversation freed, and the tabs told.
- SIGKILL (a crash, the OOM killer): the reply's text is checkpointed with the heartbeat,
  so at most the last beat is lost, and the conversation is usable again within 15 s.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from chat.client.tab import Tab
from tests.fake_model_server import FakeModelServer
from tests.live_server import LiveServer, server_env
from tests.redis_layer import REDIS_URL, require_redis

pytestmark = pytest.mark.slow

LONG_REPLY = "#tokens=2000 #delay=0.02"  # 40 s of text: always cut by the signal


@pytest.fixture
def model_server():
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def two_servers(tmp_path, model_server):
    require_redis()
    env = server_env(tmp_path, model_server.url, REDIS_URL=REDIS_URL, REDIS_PREFIX=f"dur-{uuid.uuid4().hex[:8]}")
    first, second = LiveServer(env, log_path=tmp_path / "first.log"), LiveServer(env, log_path=tmp_path / "second.log")
    first.manage("migrate", "--noinput")
    token = first.create_token("alice")
    first.start()
    second.start()
    yield first, second, token
    first.stop()
    second.stop()


async def exit_of(server: LiveServer, timeout: float) -> int:
    """The process's exit code, once it has exited (waited for in a thread)."""
    return await asyncio.to_thread(server.process.wait, timeout)


def text_of(tab: Tab, reply: str) -> str:
    return "".join(piece for _, piece in tab.replies[reply].deltas)


async def start_long_reply(writer: Tab, watcher: Tab) -> tuple[str, str, dict]:
    """A long reply written by `writer`'s process, joined by `watcher`: (conversation, reply, its state)."""
    await writer.send("message.send", conversation=None, content="long " + LONG_REPLY)
    created = await writer.receive("conversation.created")
    conversation_id = created["conversation"]["id"]
    started = await writer.receive("reply.started")
    await writer.receive("reply.delta", seq=5)
    await watcher.send("conversation.open", conversation=conversation_id)
    state = await watcher.receive("conversation.state")
    assert state["generating"] is not None, "the reply was still being written"
    return conversation_id, started["message"], state


async def test_sigterm_mid_reply_stores_the_text_as_interrupted_frees_the_conversation_and_tells_the_tabs(two_servers):
    first, second, token = two_servers
    writer = await Tab.open(first.ws_url, token)
    watcher = await Tab.open(second.ws_url, token)
    conversation_id, reply_id, state = await start_long_reply(writer, watcher)
    signalled = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    text, final = await watcher.follow_reply(state["generating"], timeout=10)
    assert await exit_of(first, 10) == 0
    exited = time.monotonic() - signalled
    assert exited < 5, f"daphne took {exited:.1f} s to stop after SIGTERM"
    assert "replies interrupted by shutdown" in first.log() and "unfinished=0" in first.log(), first.log()[-2000:]

    assert final["type"] == "reply.completed" and final["stopped"] is False
    stored = final["message"]
    assert stored["id"] == reply_id and stored["status"] == "interrupted"
    assert text == stored["content"], "the tab on the other process saw exactly the stored text"
    assert stored["content"].startswith("w0 w1 w2 w3 w4 w5") and len(stored["content"].split()) < 2000
    told = await writer.receive("reply.completed", timeout=10)  # before its own socket closed
    assert told["message"] == stored, "the dying process's tab was told too"
    assert stored["content"].startswith(text_of(writer, reply_id))

    first.start()  # the restarted process; the writer's page reconnects to it
    reconnected = await Tab.open(first.ws_url, token)
    await reconnected.send("conversation.open", conversation=conversation_id)
    reopened = await reconnected.receive("conversation.state")
    assert reopened["generating"] is None
    assert reopened["messages"][-1]["content"] == stored["content"]
    assert reopened["messages"][-1]["status"] == "interrupted"

    await reconnected.send("message.regenerate", conversation=conversation_id)  # the claim is free at once
    _, done = await reconnected.follow_reply()
    # The same long prompt again, now cut by the reply length limit.
    assert done["type"] == "reply.completed" and done["message"]["status"] == "cut", done
    for tab in (writer, watcher, reconnected):
        await tab.close()


async def test_sigkill_mid_reply_loses_at_most_the_last_checkpoint_and_frees_the_conversation_within_15_s(two_servers):
    first, second, token = two_servers
    writer = await Tab.open(first.ws_url, token)
    watcher = await Tab.open(second.ws_url, token)
    conversation_id, reply_id, _ = await start_long_reply(writer, watcher)
    await writer.receive("reply.delta", seq=150)  # a few seconds in: several checkpoints stored
    killed_at = time.time()
    os.kill(first.process.pid, signal.SIGKILL)
    await exit_of(first, 10)
    seen = text_of(writer, reply_id)

    # The watcher's page reconnects and opens the conversation: its checkpoint first (the
    # dead process answers no snapshot), then the interrupted reply once the claim is stale.
    reopened = await Tab.open(second.ws_url, token)
    await reopened.send("conversation.open", conversation=conversation_id)
    shown = await reopened.receive("conversation.state")
    assert shown["generating"] is not None and seen.startswith(shown["generating"]["content"])
    recovered = await reopened.receive("conversation.state", timeout=15)
    usable_after = time.time() - killed_at
    assert recovered["generating"] is None
    last = recovered["messages"][-1]
    assert (last["id"], last["status"]) == (reply_id, "interrupted")
    stored = last["content"]
    assert stored and seen.startswith(stored), "the stored text is a prefix of what the tab saw"
    assert usable_after < 15, f"the conversation was locked for {usable_after:.1f} s after the kill"

    # The lost text: what arrived after the checkpoint, measured from its first delta to the kill.
    arrived, length = [], 0
    for at, piece in writer.replies[reply_id].deltas:
        if length >= len(stored):
            arrived.append(at)
        length += len(piece)
    lost_seconds = killed_at - arrived[0] if arrived else 0.0
    assert lost_seconds < 2.0, f"{lost_seconds:.2f} s of text lost ({len(seen) - len(stored)} characters)"

    await reopened.send("message.send", conversation=conversation_id, content="again #tokens=3")
    text, final = await reopened.follow_reply()
    assert final["type"] == "reply.completed" and text == "w0 w1 w2"
    for tab in (writer, watcher, reopened):
        await tab.close()
