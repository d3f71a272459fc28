"""Per-user sliding-window limits, so one client's burst cannot starve the others."""
from __future__ import annotations

import time
from collections import deque


class SlidingWindowLimiter:
    """Allow `limit` events per `window` seconds for each key."""

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._events: dict[object, deque[float]] = {}

    def hit(self, key: object) -> float | None:
        """Record an event; return None if allowed, else the seconds to wait."""
        now = time.monotonic()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return round(self.window - (now - events[0]), 2)
        events.append(now)
        return None
