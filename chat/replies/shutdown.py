"""Graceful shutdown: every running reply is stored as interrupted before the process exits.

Reply tasks are plain asyncio tasks (chat/replies/task.py `running`), not application
instances, so daphne never cancels them: on SIGTERM (a Heroku restart, a deploy,
systemd) they would die with the process, their text lost and their conversation
claimed until the claim goes stale (issue 15). Under daphne, `install()` adds a Twisted
"before shutdown" trigger; Twisted waits for the Deferred it returns before stopping
the reactor. It cancels every running reply, whose CancelledError path stores the text
so far as `interrupted`, releases the claim and sends `reply.completed` to the
conversation's group (tabs on other processes see it at once; tabs of this process,
whose consumers daphne cancels at the same moment, see the stored reply when they
reconnect), and waits for them, at most CHAT_SHUTDOWN_TIMEOUT seconds.
"""
from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

from chat.replies.task import running

logger = logging.getLogger(__name__)


async def interrupt_replies(timeout: float) -> int:
    """Cancel every running reply of this process and wait until each is stored, at most
    `timeout` seconds; returns how many were still running after that."""
    tasks = [reply.task for reply in list(running.values()) if reply.task is not None and not reply.task.done()]
    if not tasks:
        return 0
    started = time.monotonic()
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    logger.warning("replies interrupted by shutdown",
                   extra={"replies": len(tasks), "unfinished": len(pending),
                          "seconds": round(time.monotonic() - started, 3)})
    return len(pending)


def install() -> None:
    """Store running replies when daphne's reactor shuts down (call once, under daphne)."""
    from twisted.internet import defer, reactor

    def before_shutdown() -> defer.Deferred:
        future = asyncio.ensure_future(interrupt_replies(settings.CHAT_SHUTDOWN_TIMEOUT))
        return defer.Deferred.fromFuture(future).addErrback(
            lambda failure: logger.error("shutdown of replies failed: %s", failure.getErrorMessage()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
