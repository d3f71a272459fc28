"""Per-user sliding-window limits, so one client's burst cannot starve the others.

With Redis configured (REDIS_URL) the window lives in Redis, one sorted set per
limiter and key, updated by one Lua script on Redis's own clock: every process
counts against the same window, so two processes do not double the documented
limits. Without Redis (or while it cannot be reached) the window is this process's
memory. `hit` is a coroutine either way and never blocks the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import deque

from django.conf import settings

logger = logging.getLogger(__name__)

# KEYS[1]: the window; ARGV: window seconds, limit, a unique member. Returns nil when the
# event is allowed (and recorded), else the seconds to wait, as a string.
_HIT_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return tostring(window - (now - tonumber(oldest[2])))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return false
"""

# One client per event loop: redis.asyncio connections belong to the loop that made them.
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_warned_at = 0.0  # while Redis is down, one warning a minute, not one per frame
# Connections of a process's limiter. redis-py's default pool opens a connection for every
# command that finds none free, and each new one reads redis-py's package metadata
# (`importlib.metadata.version`, for CLIENT SETINFO): with 200 tabs sending at once, that
# was 30 % of the event loop (bench §1, 1 process + Redis, py-spy). A bounded pool makes a burst wait a few hundred microseconds for a connection
# instead; one script call holds it for one round trip.
POOL_SIZE = 16


def _redis_script():
    import redis.asyncio

    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is None or entry[0] != settings.REDIS_URL:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=POOL_SIZE, timeout=2, socket_timeout=2, socket_connect_timeout=2,
            **settings.REDIS_TLS_OPTIONS)
        client = redis.asyncio.Redis(connection_pool=pool)
        entry = (settings.REDIS_URL, client.register_script(_HIT_SCRIPT))
        _clients[loop] = entry
    return entry[1]


class SlidingWindowLimiter:
    """Counts events per key; the limit and window are given at each hit.

    They come from the settings at the moment of the hit, so that changed settings
    (and tests) take effect without rebuilding the limiter. `name` keeps two limiters'
    windows apart in Redis.
    """

    def __init__(self, name: str = "events") -> None:
        self.name = name
        self._events: dict[object, deque[float]] = {}

    async def hit(self, key: object, limit: int, window: float) -> float | None:
        """Record an event; return None if allowed, else the seconds to wait."""
        if settings.REDIS_URL:
            try:
                wait = await _redis_script()(keys=[f"{settings.REDIS_PREFIX}:ratelimit:{self.name}:{key}"],
                                             args=[window, limit, uuid.uuid4().hex])
            except Exception:
                _warn_redis_failed(self.name)
            else:
                return None if wait is None else round(float(wait), 2)
        return self.hit_here(key, limit, window)

    def hit_here(self, key: object, limit: int, window: float) -> float | None:
        """The same, in this process's memory only."""
        now = time.monotonic()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= window:
            events.popleft()
        if len(events) >= limit:
            return round(window - (now - events[0]), 2)
        events.append(now)
        return None


def _warn_redis_failed(name: str) -> None:
    global _warned_at
    if time.monotonic() - _warned_at >= 60:
        _warned_at = time.monotonic()
        logger.warning("rate limits counted per process: Redis failed", exc_info=True, extra={"limiter": name})
