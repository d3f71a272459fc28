"""Issue 16, item 9: with Redis configured, rate limits hold across processes."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async

from chat.ratelimit import SlidingWindowLimiter
from tests.redis_layer import REDIS_URL, require_redis
from tests.test_production import run_django


@pytest.fixture
def redis_limits(settings):
    require_redis()
    settings.REDIS_URL = REDIS_URL
    settings.REDIS_TLS_OPTIONS = {}
    settings.REDIS_PREFIX = f"test-{uuid.uuid4().hex[:10]}"
    return settings


async def test_two_processes_limiters_share_one_window_in_redis(redis_limits):
    # Two limiter objects stand for two processes: each has its own memory.
    first, second = SlidingWindowLimiter("frames"), SlidingWindowLimiter("frames")
    for limiter in (first, second, first, second, first):
        assert await limiter.hit(7, 5, 30.0) is None
    wait = await second.hit(7, 5, 30.0)
    assert wait is not None and 29 < wait <= 30
    assert await first.hit(7, 5, 30.0) is not None
    assert first._events == {} and second._events == {}, "counted in Redis, not in memory"
    assert await first.hit(8, 5, 30.0) is None  # another user has a window of their own
    assert await SlidingWindowLimiter("replies").hit(7, 5, 30.0) is None  # so has another limiter


async def test_limit_counted_in_another_process_holds_here(redis_limits, tmp_path):
    script = ("import asyncio; from chat.ratelimit import SlidingWindowLimiter as L; l = L('frames'); "
              "print([asyncio.run(l.hit(7, 5, 30.0)) for _ in range(4)])")
    result = await sync_to_async(run_django)(tmp_path, ["manage.py", "shell", "-c", script], REDIS_URL=REDIS_URL,
                                             REDIS_PREFIX=redis_limits.REDIS_PREFIX)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "[None, None, None, None]", result.stderr
    limiter = SlidingWindowLimiter("frames")
    assert await limiter.hit(7, 5, 30.0) is None
    assert await limiter.hit(7, 5, 30.0) is not None


async def test_window_slides_in_redis(redis_limits):
    limiter = SlidingWindowLimiter("frames")
    assert await limiter.hit(7, 1, 0.2) is None
    wait = await limiter.hit(7, 1, 0.2)
    assert wait is not None and 0 < wait <= 0.2
    other = SlidingWindowLimiter("frames")
    await asyncio.sleep(wait + 0.05)  # the window itself is what is tested: it must let go
    assert await other.hit(7, 1, 0.2) is None


async def test_unreachable_redis_falls_back_to_this_processes_window(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_TLS_OPTIONS = {}
    limiter = SlidingWindowLimiter("frames")
    assert await limiter.hit(7, 1, 30.0) is None
    assert await limiter.hit(7, 1, 30.0) is not None
    assert limiter._events, "counted in memory while Redis is down"


async def test_a_burst_of_hits_shares_a_bounded_pool_of_redis_connections(redis_limits):
    """200 tabs sending at once: every hit is counted, over at most POOL_SIZE connections
    (an unbounded pool opened one per waiting hit, each reading redis-py's metadata)."""
    import redis.asyncio

    from chat import ratelimit

    name = f"limiter-{uuid.uuid4().hex[:8]}"
    ratelimit._clients.clear()
    limiter = SlidingWindowLimiter("frames")
    # The first hit makes the pool; each of its connections then names itself, so that
    # Redis's own client list shows them.
    assert await limiter.hit(1, 1000, 30.0) is None
    pool = ratelimit._redis_script().registered_client.connection_pool
    pool.connection_kwargs["client_name"] = name
    await pool.disconnect()
    waits = await asyncio.gather(*(limiter.hit(user % 10, 1000, 30.0) for user in range(200)))
    assert waits == [None] * 200
    async with redis.asyncio.Redis.from_url(REDIS_URL) as admin:
        named = [c for c in await admin.client_list() if c.get("name") == name]
    assert 1 <= len(named) <= ratelimit.POOL_SIZE
    assert await limiter.hit(1, 21, 30.0) is not None  # 1 + 20 hits of user 1 counted: the 22nd is refused
