"""Issue 16, item 5: can one user's hostile replies block the event loop for everyone?

One daphne, one scripted model. User A streams 12 replies at once, each 16,000
characters of pathological Markdown (unbalanced `[`, `[a](` runs, deep quotes, `*`
runs...); user B pings every 20 ms meanwhile. Reported: B's ping round trips, alone and
under A's load, and the added p99. Run: `python -m bench.hostile_ping`.

Last run (2026-11-30, quiet machine): ping p99 10.7 ms alone, 13.6 ms during the 12
replies (+2.8 ms; max 637 ms once in 5,219 pings); 11 of the 12 replies had not finished
at 120 s: 48,000 chunks of pathological Markdown keep one process busy that long.
"""
from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import bench.django_ready  # noqa: F401  (sets Django up before chat imports its models)
from bench.rendering import hostile_inputs
from bench.servers import ModelServer, daphne, seed, server_env
from bench.stats import percentile
from chat.client.tab import Tab

STREAMS = 12
PING_EVERY = 0.02


async def pings(tab: Tab, stop: asyncio.Event) -> list[float]:
    out = []
    while not stop.is_set():
        start = len(tab.inbox)
        t = time.perf_counter()
        await tab.send("ping")
        await tab.wait("pong", start=start, timeout=30)
        out.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(PING_EVERY)
    return out


async def measure(workdir: Path) -> dict:
    model = ModelServer(workdir, "model-server").start()
    server = None
    try:
        # The scripted replies ride in the user message, URL-encoded: up to about 100 KB.
        env = server_env(workdir, model.url, CHAT_MAX_CONTENT_CHARS="400000", CHAT_MAX_FRAME_BYTES="1000000")
        server = daphne(env, workdir, "daphne-hostile")
        users = seed(server, {"groups": [{"prefix": "hostile", "users": 1, "conversations": STREAMS},
                                         {"prefix": "pinger", "users": 1, "conversations": 1}]})
        attacker, pinger = users["groups"][0][0], users["groups"][1][0]
        a, b = Tab(server.ws_url, token=attacker["token"]), Tab(server.ws_url, token=pinger["token"])
        await a.connect()
        await b.connect()
        try:
            stop = asyncio.Event()
            task = asyncio.create_task(pings(b, stop))
            await asyncio.sleep(2)
            stop.set()
            alone = await task
            shapes = list(hostile_inputs().values())
            stop = asyncio.Event()
            task = asyncio.create_task(pings(b, stop))
            started = time.perf_counter()
            turns = [asyncio.wait_for(a.turn(conv, "hostile #reply=" + quote(shapes[i % len(shapes)], safe=""),
                                             timeout=120), 150)
                     for i, conv in enumerate(attacker["conversations"][:STREAMS])]
            results = await asyncio.gather(*turns, return_exceptions=True)
            took = time.perf_counter() - started
            failed = [repr(r)[:120] for r in results if isinstance(r, BaseException)]
            errors = [f for _, f in a.inbox if f.get("type") == "error"]
            stop.set()
            loaded = await task
        finally:
            await a.close()
            await b.close()
        return {"alone": alone, "loaded": loaded, "took": took, "failed": failed, "errors": errors}
    finally:
        if server is not None:
            server.stop()
        model.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(measure(Path(tmp)))
    alone, loaded = r["alone"], r["loaded"]
    print(f"12 hostile 16,000-char replies streamed in {r['took']:.1f} s; "
          f"not completed: {len(r['failed'])} {r['errors'][:3]}")
    print("| ping round trip, ms | p50 | p99 | max | pings |\n|---|---|---|---|---|")
    for label, xs in (("alone", alone), (f"during {STREAMS} hostile replies", loaded)):
        print(f"| {label} | {percentile(xs, 50):.1f} | {percentile(xs, 99):.1f} | {max(xs):.1f} | {len(xs)} |")
    print(f"\nadded p99: {percentile(loaded, 99) - percentile(alone, 99):.1f} ms")


if __name__ == "__main__":
    main()
