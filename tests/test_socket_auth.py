"""Who may open the chat socket: session cookie with a known Origin, or an API token."""
from __future__ import annotations

import datetime
import gc
import io

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.utils import timezone

from chat.models import ApiToken, hash_token
from tests.conftest import session_cookie
from tests.sockets import ChatSocket, bearer, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


async def issue_token(user) -> str:
    _, raw = await sync_to_async(ApiToken.issue)(user)
    return raw


async def test_anonymous_socket_is_closed_with_4401():
    assert await ChatSocket.attempt(None) == ("closed", 4401)


async def test_session_cookie_with_own_origin_is_accepted():
    user = await create_user()
    outcome, socket = await ChatSocket.attempt(user, origin=b"http://localhost:8000",
                                             headers=[(b"host", b"localhost:8000")])
    assert outcome == "hello" and socket.hello["user"] == {"id": user.pk, "username": "alice"}
    await socket.close()


async def test_a_session_made_before_the_password_changed_is_refused_and_left_to_the_pages():
    """Django's check (the session carries the password's hash), without flushing the session:
    only an HTTP response could hand the browser a new cookie."""
    user = await create_user()
    cookie = await sync_to_async(session_cookie)(user)
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(password=make_password("another one"))
    assert await ChatSocket.attempt(None, headers=[(b"cookie", cookie)]) == ("closed", 4401)
    assert await sync_to_async(Session.objects.count)() == 1


@pytest.mark.parametrize("origin", [b"https://evil.example", b"http://localhost.evil.example", b"null"])
async def test_foreign_origin_is_refused_even_with_a_valid_session(origin):
    outcome, _ = await ChatSocket.attempt(await create_user(), origin=origin)
    assert outcome == "refused"


async def test_foreign_origin_is_refused_even_with_a_valid_token():
    user = await create_user()
    outcome, _ = await ChatSocket.attempt(None, origin=b"https://evil.example", headers=bearer(await issue_token(user)))
    assert outcome == "refused"


async def test_no_origin_and_no_token_is_closed_with_4401():
    assert await ChatSocket.attempt(None, origin=None) == ("closed", 4401)


async def test_no_origin_with_only_a_session_cookie_is_closed_with_4401():
    # Without an Origin to check, a cookie proves nothing: a non-browser client needs a token.
    assert await ChatSocket.attempt(await create_user(), origin=None) == ("closed", 4401)


async def test_no_origin_with_a_valid_bearer_token_is_accepted():
    user = await create_user()
    outcome, socket = await ChatSocket.attempt(None, origin=None, headers=bearer(await issue_token(user)))
    assert outcome == "hello"
    assert socket.hello["user"] == {"id": user.pk, "username": "alice"}
    ref = await socket.send("ping")
    assert await socket.next_frame() == {"type": "pong", "ref": ref}
    await socket.close()


async def test_token_user_is_the_tokens_owner_not_the_cookies():
    alice, bob = await create_user("alice"), await create_user("bob")
    outcome, socket = await ChatSocket.attempt(alice, headers=bearer(await issue_token(bob)))
    assert outcome == "hello" and socket.hello["user"]["username"] == "bob"
    await socket.close()


@pytest.mark.parametrize("authorization", [b"Bearer chat_not-a-real-token", b"Bearer ", b"Basic YWxpY2U6cGFzcw=="])
async def test_invalid_token_is_closed_with_4401(authorization):
    await create_user()
    assert await ChatSocket.attempt(None, origin=None, headers=[(b"authorization", authorization)]) == ("closed", 4401)


async def test_invalid_token_is_refused_even_with_a_valid_session():
    user = await create_user()
    assert await ChatSocket.attempt(user, headers=bearer("chat_not-a-real-token")) == ("closed", 4401)


async def test_token_of_an_inactive_user_is_refused():
    user = await create_user()
    raw = await issue_token(user)
    user.is_active = False
    await sync_to_async(user.save)()
    assert await ChatSocket.attempt(None, origin=None, headers=bearer(raw)) == ("closed", 4401)


async def test_create_token_command_prints_a_working_token_and_stores_only_its_hash():
    user = await create_user()
    out = io.StringIO()
    await sync_to_async(call_command)("create_token", "alice", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith(ApiToken.PREFIX) and len(raw) > 30
    stored = await sync_to_async(lambda: list(ApiToken.objects.filter(user=user).values()))()
    assert len(stored) == 1 and stored[0]["key_hash"] == hash_token(raw)
    assert raw not in {str(value) for value in stored[0].values()}
    outcome, socket = await ChatSocket.attempt(None, origin=None, headers=bearer(raw))
    assert outcome == "hello" and socket.hello["user"]["id"] == user.pk
    await socket.close()


async def test_an_open_socket_holds_few_copies_of_its_handshake_scope():
    """Each middleware that copies the scope keeps its copy on the stack for the socket's
    life: one for authentication (consumers/auth.py) and one for the URL route, not five."""
    socket = await ChatSocket.connect(await create_user())
    await socket.send("ping")
    await socket.receive("pong")
    headers = socket.communicator.scope["headers"]
    copies = [ref for ref in gc.get_referrers(headers) if isinstance(ref, dict) and ref.get("headers") is headers]
    assert len(copies) - 1 <= 2  # besides the server's own scope
    await socket.close()


async def test_an_expired_session_is_refused():
    user = await create_user()
    cookie = await sync_to_async(session_cookie)(user)
    await sync_to_async(Session.objects.update)(expire_date=timezone.now() - datetime.timedelta(seconds=1))
    assert await ChatSocket.attempt(None, headers=[(b"cookie", cookie)]) == ("closed", 4401)


async def test_the_session_of_a_deactivated_user_is_refused():
    user = await create_user()
    cookie = await sync_to_async(session_cookie)(user)
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(is_active=False)
    assert await ChatSocket.attempt(None, headers=[(b"cookie", cookie)]) == ("closed", 4401)


@pytest.mark.parametrize("key", [b"unknownsessionkey0123456789abcde", b"short", b"bad\\key\"", b""])
async def test_an_unknown_or_malformed_session_key_is_refused(key):
    await create_user()
    assert await ChatSocket.attempt(None, headers=[(b"cookie", b"sessionid=" + key)]) == ("closed", 4401)


def test_the_handshakes_session_read_gives_what_djangos_store_loads():
    """consumers/auth.py reads the session row by a prepared statement: the same data as
    Django's SessionStore.load() for a live, an expired, an unknown and a malformed key."""
    from django.contrib.sessions.backends.db import SessionStore

    from chat.credentials import _session_data

    live = SessionStore()
    live.update({"_auth_user_id": "7", "note": "ü"})
    live.create()
    expired = SessionStore()
    expired["x"] = 1
    expired.create()
    Session.objects.filter(pk=expired.session_key).update(expire_date=timezone.now() - datetime.timedelta(seconds=1))
    for key in (live.session_key, expired.session_key, "unknownsessionkey0123456789abcde", "short"):
        assert _session_data(key) == SessionStore(key).load(), key
    assert _session_data(live.session_key) == {"_auth_user_id": "7", "note": "ü"}
    assert _session_data(expired.session_key) == {}


async def test_a_tokens_handshake_marks_it_used():
    user = await create_user()
    raw = await issue_token(user)
    token = await sync_to_async(ApiToken.objects.get)(key_hash=hash_token(raw))
    assert token.last_used_at is None
    before = timezone.now()
    outcome, socket = await ChatSocket.attempt(None, origin=None, headers=bearer(raw))
    assert outcome == "hello" and socket.hello["user"]["id"] == user.pk
    await socket.close()
    await sync_to_async(token.refresh_from_db)()
    assert token.last_used_at is not None and token.last_used_at >= before
