"""Fixed-window counters in Django's cache, for the account forms' throttles.

The cache is Redis when REDIS_URL is set (shared by every process), else per-process
memory. A key is hashed, so that no username or address is stored in the cache.
Used by chat/accounts.py: failed logins (per identity and address, and per address),
sign-ups and probes of taken usernames (per address), wrong old passwords (per user).
"""
from __future__ import annotations

import hashlib
import math
import time
import unicodedata


def identity(username: str) -> str:
    """The account a typed username reaches: Django's login form applies NFKC
    (fullwidth `ｃａｒｏｌ` and `𝐜arol` are `carol`); case folding on top merges
    `Carol` too, so look-alikes share one counter instead of getting fresh guesses."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).strip().casefold())


class Throttle:
    """Events of one key in a fixed window: `limit` of them, then wait until it ends."""

    def __init__(self, name: str, key: str, limit: int, window: int) -> None:
        from django.core.cache import cache

        self._cache = cache
        digest = hashlib.sha256(f"{name}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()
        self.count_key = f"throttle:{name}:{digest}"
        self.until_key = f"throttle-until:{name}:{digest}"
        self.limit, self.window = limit, window

    def wait(self) -> int | None:
        """Seconds to wait before the next event is allowed, or None (0 limit: never)."""
        if self.limit <= 0 or self._cache.get(self.count_key, 0) < self.limit:
            return None
        until = self._cache.get(self.until_key)
        if until is None:
            return None
        return max(1, math.ceil(until - time.time()))

    def hit(self) -> None:
        self._cache.add(self.until_key, time.time() + self.window, self.window)
        self._cache.add(self.count_key, 0, self.window)
        try:
            self._cache.incr(self.count_key)
        except ValueError:  # expired between add and incr
            self._cache.set(self.count_key, 1, self.window)

    def clear(self) -> None:
        self._cache.delete_many([self.count_key, self.until_key])


def longest_wait(*throttles: Throttle) -> int | None:
    waits = [wait for wait in (throttle.wait() for throttle in throttles) if wait is not None]
    return max(waits) if waits else None
