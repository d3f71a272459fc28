"""Issue 16, item 2: an open socket is closed (4401) when its credential is withdrawn."""
from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import Client

from chat.models import ApiToken
from tests.redis_layer import REDIS_URL, redis_layer_settings, require_redis
from tests.sockets import ChatSocket, bearer, create_user
from tests.test_production import run_django

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


async def close_code(socket: ChatSocket, timeout: float = 5) -> int:
    """Wait for the server to close the socket; its close code."""
    while True:
        output = await socket.communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output.get("code")


async def stays_open(socket: ChatSocket) -> bool:
    ref = await socket.send("ping")
    return await socket.next_frame() == {"type": "pong", "ref": ref}


async def browser_session(user) -> tuple[Client, ChatSocket]:
    """A logged-in browser: its HTTP client and a socket opened with its session cookie."""
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    socket = await ChatSocket.connect(None, headers=[(b"cookie", cookie)])
    return client, socket


async def token_socket(user) -> tuple[ApiToken, ChatSocket]:
    token, raw = await sync_to_async(ApiToken.issue)(user, "cli")
    return token, await ChatSocket.connect(None, origin=None, headers=bearer(raw))


async def test_logging_out_closes_that_sessions_socket_but_not_another_sessions():
    user = await create_user()
    client, socket = await browser_session(user)
    _, other = await browser_session(user)
    response = await sync_to_async(client.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await close_code(socket) == 4401
    assert await stays_open(other)
    await other.close()


async def test_revoking_a_token_closes_its_socket_but_not_another_tokens():
    user = await create_user()
    token, socket = await token_socket(user)
    _, other = await token_socket(user)
    client = Client()
    await sync_to_async(client.force_login)(user)
    response = await sync_to_async(client.post)(f"/settings/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    assert await close_code(socket) == 4401
    assert await stays_open(other)
    await other.close()


async def test_changing_the_password_closes_other_sessions_sockets():
    user = await create_user()
    _, socket = await browser_session(user)
    changer = Client()
    await sync_to_async(changer.login)(username="alice", password=PASSWORD)
    response = await sync_to_async(changer.post)("/accounts/password_change/", {
        "old_password": PASSWORD, "new_password1": "another horse entirely 42", "new_password2": "another horse entirely 42"})
    assert response.status_code == 302, response.content[:500]
    assert await close_code(socket) == 4401


async def test_deactivating_the_user_closes_every_socket():
    user = await create_user()
    _, session_socket = await browser_session(user)
    _, api_socket = await token_socket(user)
    user.is_active = False
    await sync_to_async(user.save)()
    assert await close_code(session_socket) == 4401
    assert await close_code(api_socket) == 4401


async def test_another_users_withdrawal_leaves_a_socket_open():
    alice, bob = await create_user("alice"), await create_user("bob")
    _, socket = await browser_session(alice)
    bob.is_active = False
    await sync_to_async(bob.save)()
    assert await stays_open(socket)
    assert await socket.nothing_more()
    await socket.close()


async def test_logging_in_again_elsewhere_closes_nothing():
    user = await create_user()
    _, socket = await browser_session(user)
    await sync_to_async(Client().login)(username="alice", password=PASSWORD)  # stamps last_login
    assert await stays_open(socket)
    await socket.close()


async def test_deactivation_in_another_process_closes_the_socket_over_redis(settings, tmp_path):
    require_redis()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    settings.CHANNEL_LAYERS = redis_layer_settings(prefix)
    try:
        user = await create_user()
        _, socket = await browser_session(user)
        database = django_settings.DATABASES["default"]
        if database["ENGINE"].endswith("sqlite3"):
            url = f"sqlite:///{database['NAME']}"
        else:
            url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        script = ("from django.contrib.auth.models import User; u = User.objects.get(username='alice'); "
                  "u.is_active = False; u.save()")
        result = await sync_to_async(run_django)(tmp_path, ["manage.py", "shell", "-c", script], DATABASE_URL=url,
                                                 REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix)
        assert result.returncode == 0, result.stderr
        assert await close_code(socket, timeout=20) == 4401  # generous: this machine runs at a load of 9
    finally:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
