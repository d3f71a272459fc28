"""CPU per token of reading a model's stream (§2): off the connection vs through httpx2.

The reply task reads the model's chunked body itself (chat/backends/chunked_body.py);
httpx2 still reads any other body. Both ways run in this process, alternately, against
the scripted model server in a process of its own: the backend's whole read (request,
chunks, SSE lines, JSON, pieces) over this process's CPU time, one token per read of
the socket (1 ms between tokens).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import bench.django_ready  # noqa: F401  (sets Django up before chat imports its models)
from bench.servers import ModelServer
from bench.stats import median

MODEL = "fake/echo"
DELAY = 0.001


async def _one_reply(backend, tokens: int, direct: bool) -> tuple[float, bool]:
    """CPU µs per token of one reply, and whether the direct reader took it."""
    from chat.backends import chunked_body

    real = chunked_body.for_response
    used = []
    chunked_body.for_response = (lambda response: used.append(real(response)) or used[-1]) if direct \
        else (lambda response: None)
    try:
        stream = _backend_stream(backend, tokens)
        started, count = time.process_time(), 0
        async for _ in stream:
            count += 1
        return (time.process_time() - started) / max(1, count) * 1e6, bool(used and used[0] is not None)
    finally:
        chunked_body.for_response = real


def _backend_stream(backend, tokens: int):
    content = f"read #tokens={tokens} #delay={DELAY} #markdown"
    return backend.stream(MODEL, [{"role": "user", "content": content}], max_tokens=tokens + 10)


async def _measure(url: str, tokens: int, rounds: int) -> dict:
    from django.conf import settings

    from chat.backends import HFBackend

    settings.HF_BASE_URL, settings.HF_TOKEN, settings.HF_PROVIDER, settings.HF_TIMEOUT = url, "bench", "", 30.0
    backend = HFBackend()
    try:
        await _one_reply(backend, 50, True)  # warm-up: imports, the pool, the connection
        await _one_reply(backend, 50, False)
        runs: dict[bool, list[float]] = {True: [], False: []}
        took_direct = True
        for _ in range(rounds):
            for direct in (False, True):
                us, used = await _one_reply(backend, tokens, direct)
                runs[direct].append(us)
                took_direct = took_direct and (used or not direct)
        return {"httpx2": runs[False], "direct": runs[True], "direct_taken": took_direct}
    finally:
        await backend.aclose()


def measure(workdir: Path, tokens: int, rounds: int) -> dict:
    workdir.mkdir(exist_ok=True)
    model = ModelServer(workdir, "model-read").start()
    try:
        result = asyncio.run(_measure(model.url, tokens, rounds))
    finally:
        model.stop()
    result["httpx2_median"] = median(result["httpx2"])
    result["direct_median"] = median(result["direct"])
    return result
