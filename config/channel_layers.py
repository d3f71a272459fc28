"""The embedded in-memory channel layer, without its per-message full scan.

Channels' InMemoryChannelLayer walks every channel and every group membership to
expire old messages on each `receive` and each `group_send`. With hundreds of
sockets streaming replies, that is a scan of the whole process per relayed
token. Expiry is a slow clock (60 s messages, one-day group membership), so
sweeping at most once a second keeps its meaning and drops its cost.
"""
from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer


class SweepingInMemoryChannelLayer(InMemoryChannelLayer):
    sweep_interval = 1.0  # seconds between expiry sweeps
    _last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        super()._clean_expired()
