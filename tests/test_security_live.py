"""Issue 16 against a real daphne: oversized frames get `too_large` (item 11), share tokens
stay out of the access log and warnings (item 11), and the Origin check sees the real Host
header (item 4)."""
from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request

import pytest
import websockets

from chat.client.tab import Tab
from tests.live_server import LiveServer

MIB = 1024 * 1024


class _Plain:
    def __init__(self, ws):
        self.ws = ws

    async def next_frame(self, timeout: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def send(self, type: str, **fields) -> None:
        await self.ws.send(json.dumps({"type": type, **fields}))

    async def receive(self, type: str, timeout: float = 15, **match) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame(timeout)
                if frame["type"] == type and all(frame.get(k) == v for k, v in match.items()):
                    return frame

    async def close(self) -> None:
        await self.ws.close()


async def expect_too_large(socket) -> None:
    frame = await socket.next_frame()
    assert frame["type"] == "error" and frame["code"] == "too_large", frame
    assert "65536 bytes" in frame["message"]


async def still_open(socket) -> None:
    await socket.send("ping", ref="still-open")
    assert await socket.receive("pong", ref="still-open") == {"type": "pong", "ref": "still-open"}


async def test_frames_over_a_mebibyte_get_too_large_and_the_socket_stays_open(live_alice):
    server, token = live_alice
    # A plain client with the websockets library's defaults (a browser-like peer), not the
    # recording Tab: the frames' fate on the server is what is under test.
    connection = await websockets.connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    socket = _Plain(connection)
    assert (await socket.next_frame())["type"] == "hello"
    await socket.ws.send(json.dumps({"type": "message.send", "conversation": None, "content": "x" * (2 * MIB)}))
    await expect_too_large(socket)
    await socket.ws.send(["y" * (MIB // 2)] * 4)  # one message in four fragments
    await expect_too_large(socket)
    await socket.ws.send(b"\0" * (3 * MIB))
    await expect_too_large(socket)
    await socket.ws.send("z" * 70000)  # over the frame limit, under daphne's: the consumer's own answer
    await expect_too_large(socket)
    await still_open(socket)
    await socket.close()


async def test_share_tokens_stay_out_of_the_access_log_and_warnings(live_alice):
    server, token = live_alice
    socket = await Tab.open(server.ws_url, token)
    await socket.send("message.send", conversation=None, content="something to share")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    await socket.follow_reply()
    await socket.send("conversation.share", conversation=conversation_id)
    path = (await socket.receive("conversation.shared"))["url"]
    shared_token = path.strip("/").split("/")[-1]
    with urllib.request.urlopen(server.url + path) as response:
        assert response.status == 200
    unknown = "Z" * 43
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{server.url}/s/{unknown}/")
    assert missing.value.code == 404
    await socket.close()
    log = await log_when(server, lambda log: len(re.findall(r'"GET /s/', log)) >= 2)
    assert shared_token not in log and unknown not in log
    assert 'GET /s/[redacted]/' in log and "Not Found: /s/[redacted]/" in log, log[-2000:]


async def test_a_socket_is_logged_once_by_the_app_and_http_requests_keep_their_access_lines(live_alice):
    server, token = live_alice
    socket = await Tab.open(server.ws_url, token)
    await socket.close()
    with urllib.request.urlopen(server.url + "/accounts/login/") as response:
        assert response.status == 200
    log = await log_when(server, lambda log: "socket closed" in log and '"GET /accounts/login/' in log)
    assert "socket connected" in log
    # daphne's own lines for the same socket events (config/logging.py leaves them out).
    assert not re.search(r'"WS(CONNECTING|CONNECT|DISCONNECT) ', log), log[-2000:]


async def log_when(server: LiveServer, ready, timeout: float = 10) -> str:
    """The server's log once `ready(log)` holds (daphne writes an access line after the response)."""
    async with asyncio.timeout(timeout):
        while not ready(log := server.log()):
            await asyncio.sleep(0.05)
    return log


async def test_origin_of_another_port_is_refused_by_the_real_server(live_alice):
    server, token = live_alice
    headers = {"Authorization": f"Bearer {token}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws_url, origin=f"http://{server.host}:{server.port + 1}",
                                 additional_headers=headers)
    assert refused.value.response.status_code == 403
    own = await websockets.connect(server.ws_url, origin=server.url, additional_headers=headers)
    assert json.loads(await own.recv())["type"] == "hello"
    await own.close()
