"""Graceful shutdown: every running reply is stored as interrupted before the process exits.

Reply tasks are plain asyncio tasks (chat/replies/task.py `running`), not application
instances, so daphne never cancels them: on SIGTERM (a Heroku restart, a deploy,
systemd) they would die with the process, their text lost and their conversation
claimed until the claim goes stale (issue 15). Under daphne, `install()` adds a Twisted
"before shutdown" trigger; Twisted waits for the Deferred it returns before stopping
the reactor. It cancels every running reply, whose CancelledError path stores the text
so far as `interrupted`, releases the claim and sends `reply.completed` to the
conversation's group, and waits for them, at most CHAT_SHUTDOWN_TIMEOUT seconds.

daphne's own trigger cancels every consumer at that same moment, so this process's tabs
would only see the stored reply after they reconnect. So SIGTERM itself is taken over
once the reactor runs: the replies are interrupted first, while the consumers still
forward frames, and Twisted's own handler (which stops the reactor) runs after that and
a short linger for the last frames to reach the sockets. The trigger stays for every
other way of stopping (SIGINT, a second SIGTERM), where it finds nothing left to do.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from django.conf import settings

from chat import fanout
from chat.replies.task import running

logger = logging.getLogger(__name__)

LINGER = 0.3  # seconds for the consumers to forward the last frames before daphne cancels them


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
    # Their last frames, for tabs on other processes, leave before the process does.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fanout.flushed(), max(0.1, timeout - (time.monotonic() - started)))
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
    reactor.callWhenRunning(_take_sigterm, reactor)  # after Twisted installed its handlers


def _take_sigterm(reactor) -> None:
    from twisted.internet import defer

    twisted_handler = signal.getsignal(signal.SIGTERM)
    if not callable(twisted_handler):
        return  # daphne runs without signal handlers: the trigger alone stores the replies

    def stop_after_replies() -> None:
        signal.signal(signal.SIGTERM, twisted_handler)  # a second SIGTERM stops at once
        future = asyncio.ensure_future(interrupt_replies(settings.CHAT_SHUTDOWN_TIMEOUT))
        defer.Deferred.fromFuture(future).addBoth(
            lambda _: reactor.callLater(LINGER, twisted_handler, signal.SIGTERM, None))

    signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(stop_after_replies))
