"""Per-user sliding-window limits, so one client's burst cannot starve the others."""
from __future__ import annotations

import time
from collections import deque


class SlidingWindowLimiter:
    """Counts events per key; the limit and window are given at each hit.

    They come from the settings at the moment of the hit, so that changed settings
    (and tests) take effect without rebuilding the limiter.
    """

    def __init__(self) -> None:
        self._events: dict[object, deque[float]] = {}

    def hit(self, key: object, limit: int, window: float) -> float | None:
        """Record an event; return None if allowed, else the seconds to wait."""
        now = time.monotonic()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= window:
            events.popleft()
        if len(events) >= limit:
            return round(window - (now - events[0]), 2)
        events.append(now)
        return None
