"""`python -m bench.hf_client`: what a model request costs to set up, with a new HTTP client
per request (as before issue 14) and with the backend's shared pool (now).

1. CPU per request setup: building the request's AsyncInferenceClient and the httpx client
   it sends through (before: a new `httpx2.AsyncClient`, hence a new transport and TLS
   context, per request; now: a thin client over the shared pool), `time.process_time`.
2. Requests per second through `HFBackend.stream()` against tests/fake_model_server.py
   (run in its own process so it does not share this one's CPU), CONCURRENCY streams at
   a time, each a short reply, the whole reply read; and this process's CPU per request.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

SETUPS = 300
REQUESTS = 400
CONCURRENCY = 20
TOKENS = 8


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def start_fake_server() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.fake_model_server", "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    url = process.stdout.readline().strip()
    if not re.match(r"http://127\.0\.0\.1:\d+/v1", url):
        process.kill()
        raise RuntimeError(f"the fake model server did not start: {url!r}")
    return process, url


def backends():
    """(name, backend) for the two ways of making a request."""
    from huggingface_hub import AsyncInferenceClient

    from chat.backends.remote import HFBackend

    class ClientPerRequest(HFBackend):
        """The backend as it was: a new AsyncInferenceClient with its own httpx client each time."""

        def _client(self, model_id: str):
            from django.conf import settings

            client = AsyncInferenceClient(token=settings.HF_TOKEN or None, timeout=settings.HF_TIMEOUT,
                                          base_url=settings.HF_BASE_URL)
            client.pool_view = SimpleNamespace(answer_complete=False)
            return client

    return [("new client per request (before)", ClientPerRequest()), ("shared pool (now)", HFBackend())]


async def setup_cost(backend, count: int) -> float:
    """µs of CPU to build a request's client and the HTTP client it sends through, and close it."""
    started = time.process_time()
    for _ in range(count):
        client = backend._client("fake/echo")
        await client._get_async_client()
        await client.close()
    return (time.process_time() - started) / count * 1e6


async def throughput(backend, count: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, µs of this process's CPU per request) for `count` streamed replies."""
    messages = [{"role": "user", "content": f"#tokens={TOKENS}"}]
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            pieces = [p async for p in backend.stream("fake/echo", messages, max_tokens=64)]
            assert len(pieces) == TOKENS, pieces

    await asyncio.gather(*(one() for _ in range(concurrency)))  # warm up (connections, imports)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(count)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, cpu / count * 1e6


async def measure(url: str) -> list[dict]:
    from django.conf import settings

    settings.HF_BASE_URL, settings.HF_TOKEN, settings.HF_PROVIDER = url, "dummy", ""
    rows = []
    for name, backend in backends():
        await setup_cost(backend, 20)  # imports, caches
        setup = await setup_cost(backend, SETUPS)
        rate, cpu = await throughput(backend, REQUESTS, CONCURRENCY)
        if hasattr(backend, "aclose"):
            await backend.aclose()
        rows.append({"way": name, "setup_us": setup, "requests_per_s": rate, "cpu_us_per_request": cpu})
    return rows


def main() -> None:
    django_setup()
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server, url = start_fake_server()
    try:
        rows = asyncio.run(measure(url))
    finally:
        server.terminate()
        server.wait(10)
    print(f"{SETUPS} setups; {REQUESTS} streamed replies of {TOKENS} tokens, {CONCURRENCY} at a time")
    print(f"{'':34} {'setup CPU µs':>14} {'requests/s':>12} {'CPU µs/request':>16}")
    for row in rows:
        print(f"{row['way']:34} {row['setup_us']:14.0f} {row['requests_per_s']:12.0f} {row['cpu_us_per_request']:16.0f}")


if __name__ == "__main__":
    main()
