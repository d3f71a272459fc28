"""Who is on the other end of a socket.

Browsers authenticate with their session cookie and always send an `Origin`,
which must be one of ALLOWED_HOSTS (Cross-Site WebSocket Hijacking). Other
clients send no `Origin`; they must bring an API token as `Authorization: Bearer`,
because a cookie alone, without an Origin to check, proves nothing.
"""
from __future__ import annotations

import logging

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from chat.models import ApiToken

logger = logging.getLogger(__name__)


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class BearerTokenMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        authorization = _header(scope, b"authorization")
        if authorization and authorization[:7].lower() == b"bearer ":
            raw = authorization[7:].strip().decode("latin1")
            user = await database_sync_to_async(ApiToken.user_for)(raw)
            scope = dict(scope, user=user or AnonymousUser())
        elif _header(scope, b"origin") is None:
            scope = dict(scope, user=AnonymousUser())
        return await super().__call__(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Refuse foreign origins; let origin-less clients through to the token check."""

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None or self.validate_origin(parsed_origin):
            return True
        logger.info("socket refused", extra={"code": 403, "reason": "foreign origin", "origin": parsed_origin.hostname})
        return False


def socket_auth(application):
    return BrowserOriginValidator(AuthMiddlewareStack(BearerTokenMiddleware(application)), settings.ALLOWED_HOSTS)
