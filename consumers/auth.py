"""Who is on the other end of a socket.

Browsers authenticate with their session cookie and always send an `Origin`, which
must be exactly one of the origins the app is served from (Cross-Site WebSocket
Hijacking): scheme, host and port, never a wildcard. Those are `SOCKET_ALLOWED_ORIGINS`
when configured, else the origin of the handshake itself (its Host header, which must
be in ALLOWED_HOSTS, with its scheme) and the exact entries of CSRF_TRUSTED_ORIGINS.
A page on another port or scheme of the same host is another origin, and is refused.

Other clients send no `Origin`; they must bring an API token as `Authorization:
Bearer`, because a cookie alone, without an Origin to check, proves nothing. The
scope remembers which credential let the socket in (`credential`: the session key or
the token id), so that the socket can be closed when it is withdrawn
(chat/credentials.py).
"""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from django.http.request import split_domain_port, validate_host

from chat.blocking import run_blocking
from chat.credentials import Credential, session_user, token_for

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


def parse_origin(text: str) -> Origin | None:
    """`https://Example.com` → ("https", "example.com", 443); None unless it is an http(s) origin."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or "*" in parts.netloc or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _served_origin(scope) -> Origin | None:
    """The origin the browser is talking to: the handshake's Host (if ALLOWED_HOSTS has it)
    with the scheme of the connection, or the one a trusted TLS-terminating proxy reports."""
    host = (_header(scope, b"host") or b"").decode("latin1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name = proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        if (_header(scope, name) or b"").decode("latin1").strip().lower() == proxy_header[1].lower():
            scheme = "https"
    return parse_origin(f"{scheme}://{host}")


def allowed_origins(scope) -> set[Origin]:
    """SOCKET_ALLOWED_ORIGINS when set; else the served origin plus CSRF_TRUSTED_ORIGINS.
    A wildcard entry (`https://*.example.com`, allowed by Django's CSRF check) never counts."""
    if settings.SOCKET_ALLOWED_ORIGINS:
        origins = {parse_origin(text) for text in settings.SOCKET_ALLOWED_ORIGINS}
    else:
        origins = {_served_origin(scope), *(parse_origin(text) for text in settings.CSRF_TRUSTED_ORIGINS)}
    origins.discard(None)
    return origins


def origin_allowed(origin: str, scope) -> bool:
    parsed = parse_origin(origin)
    return parsed is not None and parsed in allowed_origins(scope)


def authenticate(authorization: bytes | None, has_origin: bool, cookie: bytes | None) -> tuple[object, Credential | None]:
    """The user a handshake's credential names, and that credential. Blocking.

    A bearer token wins; without one, only a browser (which always sends an Origin)
    may use its session cookie."""
    if authorization and authorization[:7].lower() == b"bearer ":
        token = token_for(authorization[7:].strip().decode("latin1"))
        return (token.user, ("token", token.pk)) if token else (AnonymousUser(), None)
    if not has_origin:
        return AnonymousUser(), None
    session_key = parse_cookie((cookie or b"").decode("latin1")).get(settings.SESSION_COOKIE_NAME)
    return session_user(session_key), ("session", session_key)


class SocketAuth:
    """Checks a handshake's Origin, then puts its user and credential into the scope.

    Refuses (403, before accepting) a handshake whose Origin is not exactly an allowed
    one, and lets origin-less clients through to the token check. One middleware, one
    copy of the scope and one trip to the database: Channels' AuthMiddlewareStack is
    three middlewares (cookies, session, user), each copying the scope and staying on
    the stack with its copy for the socket's whole life: about 5 KB of every idle socket."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        origin = _header(scope, b"origin")
        if origin is not None and not origin_allowed(origin.decode("latin1"), scope):
            logger.info("socket refused", extra={"code": 403, "reason": "foreign origin",
                                                 "origin": origin.decode("latin1")[:200]})
            return await WebsocketDenier()(scope, receive, send)
        user, credential = await run_blocking(authenticate, _header(scope, b"authorization"), origin is not None,
                                              _header(scope, b"cookie"))
        return await self.application(dict(scope, user=user, credential=credential), receive, send)


def socket_auth(application):
    return SocketAuth(application)
