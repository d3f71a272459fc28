"""A client that stops reading is dropped once the server holds too much for it."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets

from chat.client.tab import Tab
from tests.fake_model_server import FakeModelServer
from tests.live_server import LiveServer, server_env

pytestmark = pytest.mark.slow


@pytest.fixture
def bounded_server(tmp_path):
    with FakeModelServer() as model:
        env = server_env(tmp_path, model.url, CHAT_MAX_SOCKET_BUFFER_BYTES="65536", CHAT_MAX_REPLY_TOKENS="60000")
        server = LiveServer(env)
        server.manage("migrate", "--noinput")
        token = server.create_token("alice")
        server.start()
        yield server, token
        server.stop()


async def test_client_that_stops_reading_is_disconnected_and_others_are_not(bounded_server):
    server, token = bounded_server
    fast = await Tab.open(server.ws_url, token)
    await fast.send("message.send", conversation=None, content="warm up #tokens=2")
    conversation_id = (await fast.receive("conversation.created"))["conversation"]["id"]
    await fast.follow_reply()

    # The slow tab: a tiny receive buffer, opens the conversation, then never reads again.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    # No permessage-deflate for this one: compressed, the flood's frames are so small that
    # the kernel's buffers take all of them and the server never holds any for it.
    slow = await websockets.connect(server.ws_url, sock=raw, max_queue=1, compression=None,
                                    additional_headers={"Authorization": f"Bearer {token}"})
    await slow.send(json.dumps({"type": "conversation.open", "conversation": conversation_id}))
    slow.transport.pause_reading()

    await fast.send("message.send", conversation=conversation_id, content="flood #tokens=30000 #delay=0.0001")

    async def stop_once_slow_tab_is_dropped():
        async with asyncio.timeout(60):
            while "client stopped reading" not in server.log():
                await asyncio.sleep(0.2)
        await fast.send("generation.stop", conversation=conversation_id)

    stopper = asyncio.create_task(stop_once_slow_tab_is_dropped())
    text, final = await fast.follow_reply(timeout=90)
    await stopper  # raises if the slow tab was never dropped
    # The reading tab kept every delta, in order, to the end.
    assert final["type"] == "reply.completed" and final["message"]["content"] == text
    slow.transport.resume_reading()
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(30):
            while True:
                await slow.recv()
    await fast.close()
