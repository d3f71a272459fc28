"""chat/blocking.py: blocking work runs in worker threads, in parallel, with the caller's
context, reaching back to the caller's loop through async_to_sync, and without leaving a
stale database connection behind."""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connections

from chat.blocking import run_blocking

request_id = contextvars.ContextVar("request_id", default=None)


async def test_the_function_runs_in_another_thread_and_its_result_or_error_comes_back():
    thread, total = await run_blocking(lambda a, b=0: (threading.get_ident(), a + b), 2, b=3)
    assert total == 5 and thread != threading.get_ident()

    def fails():
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await run_blocking(fails)


async def test_calls_in_flight_run_in_parallel_threads():
    both = threading.Barrier(2, timeout=10)  # each call waits for the other: one thread would never get there
    assert await asyncio.gather(run_blocking(both.wait), run_blocking(both.wait)) in ([0, 1], [1, 0])


async def test_the_callers_context_variables_are_seen_in_the_thread():
    request_id.set("r-42")
    assert await run_blocking(request_id.get) == "r-42"


async def test_async_to_sync_in_the_thread_runs_on_the_callers_loop():
    loop = asyncio.get_running_loop()

    async def which_loop():
        return asyncio.get_running_loop()

    assert await run_blocking(async_to_sync(which_loop)) is loop


@pytest.mark.django_db(transaction=True)
async def test_a_connection_past_its_age_is_closed_when_the_call_ends(settings):
    def query_and_age():
        connection = connections["default"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert connection.connection is not None
        connection.close_at = time.monotonic() - 1  # as if CONN_MAX_AGE had run out during the call
        return connection

    connection = await run_blocking(query_and_age)
    assert connection.connection is None
