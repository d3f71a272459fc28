"""`python -m bench.hf_client`: what a model request costs to set up, with a new HTTP client
per request (as before issue 14) and with the backend's shared pool (now).

1. CPU per request setup: building the request's AsyncInferenceClient and the httpx client
   it sends through (before: a new `httpx2.AsyncClient`, hence a new transport and TLS
   context, per request; now: a thin client over the shared pool), `time.process_time`.
2. Requests per second through `HFBackend.stream()` against tests/fake_model_server.py
   (run in its own process), CONCURRENCY streams at a time, each a short reply, the whole
   reply read; and this process's CPU per request.
3. The same with BURST streams at a time, through one httpcore2 pool (32 kept idle, as
   before the pools were split) and through the backend's pools, alternately, ROUNDS
   times: httpcore2's pool walks all its connections on every request and every close.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from math import nan
from types import SimpleNamespace

SETUPS = 300
REQUESTS = 400
CONCURRENCY = 20
TOKENS = 8
BURST = 200
BURST_REQUESTS = 1000
ROUNDS = 5


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

        async def aclose(self) -> None:
            pass

    return [("new client per request (before)", ClientPerRequest()), ("shared pool (now)", HFBackend())]


def pool_layouts():
    """(name, backend) for one pool and for the backend's split pools."""
    from chat.backends.remote import HFBackend

    class OnePool(HFBackend):
        pool_count = 1
        max_idle_connections = 32

    return [("1 pool, 32 kept idle (before)", OnePool()),
            (f"{HFBackend.pool_count} pools, {HFBackend.max_idle_connections} kept idle (now)", HFBackend())]


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
        # The old client can no longer stream: the backend reads the body off the pool's
        # response (chat/backends/chunked_body.py), which only the pools give it.
        rate, cpu = await throughput(backend, REQUESTS, CONCURRENCY) if name.endswith("(now)") else (nan, nan)
        await backend.aclose()
        rows.append({"way": name, "setup_us": setup, "requests_per_s": rate, "cpu_us_per_request": cpu})
    return rows


async def measure_burst() -> dict[str, list[float]]:
    """µs of CPU per request at BURST at a time, per pool layout, ROUNDS samples each, alternated."""
    layouts = pool_layouts()
    samples: dict[str, list[float]] = {name: [] for name, _ in layouts}
    for _, backend in layouts:
        await throughput(backend, BURST, BURST)  # warm up: the pools, their first connections
    for _ in range(ROUNDS):
        for name, backend in layouts:
            _, cpu = await throughput(backend, BURST_REQUESTS, BURST)
            samples[name].append(cpu)
    for _, backend in layouts:
        await backend.aclose()
    return samples


def main() -> None:
    django_setup()
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server, url = start_fake_server()
    try:
        rows = asyncio.run(measure(url))
        burst = asyncio.run(measure_burst())
    finally:
        server.terminate()
        server.wait(10)
    print(f"{SETUPS} setups; {REQUESTS} streamed replies of {TOKENS} tokens, {CONCURRENCY} at a time")
    print(f"{'':34} {'setup CPU µs':>14} {'requests/s':>12} {'CPU µs/request':>16}")
    for row in rows:
        print(f"{row['way']:34} {row['setup_us']:14.0f} {row['requests_per_s']:12.0f} {row['cpu_us_per_request']:16.0f}")
    print(f"\n{BURST_REQUESTS} streamed replies of {TOKENS} tokens, {BURST} at a time; CPU µs per request, "
          f"{ROUNDS} rounds alternated")
    for name, values in burst.items():
        print(f"{name:34} median {sorted(values)[len(values) // 2]:6.0f}   ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
