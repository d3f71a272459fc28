"""The one way async code runs blocking work (database, transcript store)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async

T = TypeVar("T")


async def run_blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `function` in a worker thread, off the event loop and in parallel with
    other sockets' work (not on Channels' one shared sync thread), closing stale
    database connections around it as Channels does."""
    return await database_sync_to_async(function, thread_sensitive=False)(*args, **kwargs)
