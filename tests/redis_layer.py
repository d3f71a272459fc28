"""The real Redis on this machine as the channel layer, under a prefix of its own."""
from __future__ import annotations

import socket
import uuid

REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis() -> None:
    """Fail, never skip, when Redis is missing: these tests exist to exercise it."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as error:
        raise AssertionError(f"Redis is not reachable at {REDIS_URL}: {error}. Start it (see README).") from error


def redis_layer_settings(prefix: str | None = None) -> dict:
    """Both layers of config/settings.py with REDIS_URL: the default one and pub/sub fan-out."""
    prefix = prefix or f"test-{uuid.uuid4().hex[:10]}"
    host = {"address": REDIS_URL, "socket_timeout": 10, "socket_connect_timeout": 5}
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [host], "prefix": prefix, "capacity": 1000},
        },
        "fanout": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [host], "prefix": prefix + ":fanout:"},
        },
    }
