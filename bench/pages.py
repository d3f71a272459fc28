"""6. The chat page: time to serve GET /c/<id>/ to a logged-in user with 10, 1,000 and 10,000 conversations.

Conversation rows are seeded with bulk_create; the opened conversation has a real
transcript (alternating questions and Markdown replies) in the store. A real HTTP
client (http.client, one keep-alive connection, session cookie) times each request
from sending it to the last byte of the body, against a real daphne.
"""
from __future__ import annotations

import http.client
import time
from pathlib import Path

from bench import report
from bench.servers import ModelServer, daphne, seed, server_env
from bench.stats import fmt, median, percentile

COUNTS = (10, 1000, 10000)
LIMIT_MS = 50.0
REQUESTS = {"quick": 10, "full": 30}
PRIOR_MESSAGES = 20


def get(connection: http.client.HTTPConnection, path: str, cookie: str) -> tuple[int, int, float]:
    started = time.perf_counter()
    connection.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1"})
    response = connection.getresponse()
    body = response.read()
    return response.status, len(body), (time.perf_counter() - started) * 1000


def measure(server, user: dict, requests: int) -> dict:
    path = f"/c/{user['conversations'][0]}/"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        status, size, first = get(connection, path, user["cookie"])
        if status != 200:
            raise RuntimeError(f"GET {path} answered HTTP {status}")
        get(connection, path, user["cookie"])
        times = []
        for _ in range(requests):
            status, size, took = get(connection, path, user["cookie"])
            if status != 200:
                raise RuntimeError(f"GET {path} answered HTTP {status}")
            times.append(took)
    finally:
        connection.close()
    return {"first": first, "p50": median(times), "p99": percentile(times, 99), "size": size, "n": len(times)}


def run(mode: str, workdir: Path) -> dict:
    result = report.section("pages", "6. Chat page")
    model = ModelServer(workdir, "model-server").start()
    server = None
    measured = {}
    try:
        # DEBUG=1: with DEBUG=0 the static files storage needs `collectstatic` into the repository's
        # staticfiles/ folder, which the benchmark does not write.
        server = daphne(server_env(workdir, model.url, DEBUG="1"), workdir, "daphne-pages")
        groups = [{"prefix": f"page{n}-", "users": 1, "conversations": n, "transcripts": 1,
                   "prior_messages": PRIOR_MESSAGES, "token": False, "cookie": True} for n in COUNTS]
        users = [group[0] for group in seed(server, {"groups": groups})["groups"]]
        for n, user in zip(COUNTS, users):
            try:
                measured[n] = measure(server, user, REQUESTS[mode])
            except Exception as error:
                result["rows"].append(report.failed(f"chat page, {n:,} conversations", str(error)))
    finally:
        if server is not None:
            server.stop()
        model.stop()
    rows = []
    for n, m in measured.items():
        result["rows"].append(report.check(
            f"chat page, user with {n:,} conversations: time to serve", m["p50"], LIMIT_MS, unit="ms",
            measured=f"p50 {fmt(m['p50'])} / p99 {fmt(m['p99'])} ms"))
        rows.append([f"{n:,}", m["n"], fmt(m["first"]), fmt(m["p50"]), fmt(m["p99"]), f"{m['size'] / 1024:,.0f}"])
    result["tables"].append({
        "title": f"GET /c/<id>/ (the opened conversation holds {PRIOR_MESSAGES} messages), milliseconds",
        "headers": ["conversations", "requests timed", "first request", "p50", "p99", "page size (KiB)"],
        "rows": rows})
    result["notes"] += [
        "The limit applies to the median; the first request (cold caches: the replies' Markdown is rendered "
        "then cached) is shown apart and not counted.",
        "This server runs with DEBUG=1 (see the comment in bench/pages.py); DEBUG adds Django's query log, "
        "which is a small cost per query.",
    ]
    return result
