"""Issue 16, item 4: only exact origins (scheme, host, port) the app is served from may open a socket."""
from __future__ import annotations

import uuid

import pytest

from tests.sockets import ChatSocket, create_user
from tests.test_production import production, run_django

pytestmark = pytest.mark.django_db(transaction=True)


async def _attempt(origin: bytes, host: bytes = b"localhost:8000"):
    user = await create_user(f"user-{uuid.uuid4().hex[:8]}")
    outcome, socket = await ChatSocket.attempt(user, origin=origin, headers=[(b"host", host)])
    if outcome == "hello":
        await socket.close()
    return outcome


async def test_page_served_from_the_sockets_own_origin_opens_it():
    assert await _attempt(b"http://localhost:8000") == "hello"


@pytest.mark.parametrize("origin", [
    b"http://localhost:8001",   # another port of the same host
    b"http://localhost",        # the default port is another port too
    b"https://localhost:8000",  # another scheme
    b"http://sub.localhost:8000",
    b"http://localhost:8000.evil.example",
])
async def test_page_from_another_port_scheme_or_subdomain_of_the_same_host_is_refused(origin):
    assert await _attempt(origin) == "refused"


async def test_host_outside_allowed_hosts_proves_no_origin(settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    assert await _attempt(b"http://evil.example", host=b"evil.example") == "refused"


async def test_exact_csrf_trusted_origin_is_accepted_but_its_wildcards_are_not(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.com"]
    assert await _attempt(b"https://chat.example.com") == "hello"
    assert await _attempt(b"https://evil.example.com") == "refused"


async def test_configured_socket_origins_are_the_only_ones(settings):
    settings.SOCKET_ALLOWED_ORIGINS = ["https://chat.example.com:8443"]
    assert await _attempt(b"https://chat.example.com:8443") == "hello"
    assert await _attempt(b"https://chat.example.com") == "refused"
    assert await _attempt(b"http://localhost:8000") == "refused"  # the served origin no longer counts


async def test_tls_terminating_proxy_makes_the_served_origin_https(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    user = await create_user()
    outcome, socket = await ChatSocket.attempt(user, origin=b"https://localhost:8000",
                                               headers=[(b"host", b"localhost:8000"), (b"x-forwarded-proto", b"https")])
    assert outcome == "hello"
    await socket.close()


@pytest.mark.parametrize("origin", ["https://*.example.com", "*", "chat.example.com", "https://chat.example.com/path"])
def test_wildcard_or_malformed_socket_origin_refuses_to_start(tmp_path, origin):
    result = run_django(tmp_path, ["manage.py", "check"], **production(SOCKET_ALLOWED_ORIGINS=origin))
    assert result.returncode != 0 and "SOCKET_ALLOWED_ORIGINS takes exact origins" in result.stderr
