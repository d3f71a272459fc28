"""Redis missing at start, and lost mid-reply: replies are still stored, and sockets recover."""
from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request

import pytest
import websockets

from chat.client.tab import Tab
from tests.fake_model_server import FakeModelServer
from tests.live_server import LiveServer, free_port, server_env

pytestmark = pytest.mark.slow


class PrivateRedis:
    """A Redis of the test's own on a free port, so the test may stop and start it."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis_and_server(tmp_path):
    redis = PrivateRedis()
    with FakeModelServer() as model:
        server = LiveServer(server_env(tmp_path, model.url, REDIS_URL=redis.url))
        server.manage("migrate", "--noinput")
        token = server.create_token("alice")
        yield redis, server, token
        server.stop()
        redis.stop()


async def connect_when_possible(server, token, timeout=20) -> Tab:
    """What the page does: retry until the socket is accepted and says hello."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Tab.open(server.ws_url, token)
        except (TimeoutError, OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_redis_missing_at_start_pages_work_and_sockets_recover_when_it_comes(redis_and_server):
    redis, server, token = redis_and_server
    server.start()
    with urllib.request.urlopen(server.url + "/accounts/login/", timeout=10) as response:
        assert response.status == 200  # plain pages do not need the channel layer
    with pytest.raises((websockets.ConnectionClosed, websockets.InvalidHandshake, asyncio.TimeoutError)):
        tab = await Tab.open(server.ws_url, token)
        await tab.next_frame(5)
    redis.start()
    tab = await connect_when_possible(server, token)
    await tab.send("message.send", conversation=None, content="now it works #tokens=3")
    _, final = await tab.follow_reply()
    assert final["type"] == "reply.completed" and final["message"]["content"] == "w0 w1 w2"
    await tab.close()


async def test_redis_lost_mid_reply_the_reply_is_stored_and_the_page_recovers(redis_and_server):
    redis, server, token = redis_and_server
    redis.start()
    server.start()
    tab = await Tab.open(server.ws_url, token)
    await tab.send("message.send", conversation=None, content="keep it #tokens=150 #delay=0.02")
    conversation_id = (await tab.receive("conversation.created"))["conversation"]["id"]
    await tab.receive("reply.delta")
    redis.stop()
    await asyncio.sleep(4)  # the reply (3 s) finishes while Redis is gone
    redis.start()
    tab = await connect_when_possible(server, token)
    await tab.send("conversation.open", conversation=conversation_id)
    state = await tab.receive("conversation.state")
    assert state["generating"] is None
    reply = state["messages"][-1]
    assert reply["role"] == "assistant" and reply["status"] == "complete"
    assert reply["content"] == " ".join(f"w{i}" for i in range(150))
    await tab.send("message.send", conversation=conversation_id, content="and again #tokens=2")
    text, final = await tab.follow_reply()
    assert final["type"] == "reply.completed" and text == "w0 w1"
    await tab.close()
