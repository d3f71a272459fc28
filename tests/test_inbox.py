"""daphne's per-connection inbox (config/inbox.py): what asyncio.Queue did for daphne, smaller."""
from __future__ import annotations

import asyncio
import sys

import pytest

from config.inbox import Inbox


async def test_events_come_out_in_order_whether_put_before_or_while_waiting():
    inbox = Inbox()
    inbox.put_nowait("connect")
    inbox.put_nowait("receive 1")
    assert [await inbox.get(), await inbox.get()] == ["connect", "receive 1"]
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait("receive 2")
    inbox.put_nowait("disconnect")
    assert await asyncio.wait_for(waiting, 1) == "receive 2"
    assert await inbox.get() == "disconnect"
    assert inbox.qsize() == 0


async def test_a_cancelled_getter_passes_its_event_to_the_next_one():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("receive")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "receive"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_idle_inbox_holds_far_less_than_an_asyncio_queue():
    inbox, queue = Inbox(), asyncio.Queue()
    waiting = [asyncio.ensure_future(inbox.get()), asyncio.ensure_future(queue.get())]
    await asyncio.sleep(0)  # each has one waiting getter, as an idle socket's does
    inbox_bytes = sys.getsizeof(inbox) + sys.getsizeof(inbox._waiters)
    queue_bytes = sum(sys.getsizeof(part) for part in (queue, queue._queue, queue._getters, queue._putters,
                                                       queue._finished, queue._finished._waiters))
    assert inbox_bytes * 10 < queue_bytes
    for task in waiting:
        task.cancel()

