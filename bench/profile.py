"""Profiles (`python3 -m bench --profile`): where daphne's time goes in the workloads that miss.

Not a measurement of the figures (sampling slows the process a little): an explanation
of them. py-spy (not a dependency of the project: `pip install py-spy==0.4.1`) samples
the daphne process without stopping it (`--nonblocking`, `--idle`, `--threads`) while
a workload runs; each sample is put in the first category whose marker appears in its
stack. "Main thread" shares include its idle time (waiting in select), so a main thread
that is busy 100 % of the time is the bottleneck, and one that is mostly idle while
latency grows is waiting for something else (threads, a lock, Redis).
"""
from __future__ import annotations

import asyncio
import collections
import http.client
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.clients import token_latencies
from bench.load import Load, as_reply
from bench.relay import STAGGER, tabs_for, warm_up
from bench.relay_plan import QUICK_TOKENS, TOKENS, Scenario
from bench.servers import CpuMeter, ModelServer, daphne, raise_fd_limit, seed, server_env
from bench.stats import fmt, median, percentile
from chat.client.tab import Tab

CROWD_RATE = 20.0  # tokens/s per reply, as in §1
# The virtual environment's own py-spy (make bench runs its python without activating it), else PATH's.
PY_SPY = next((str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None) or shutil.which("py-spy")

CATEGORIES = [  # (name, markers in a stack frame; "^" = the frame starts with it); the first match wins
    ("SSL context built per reply (httpx client per model call)", ("create_default_context",)),
    ("model list: the GGUF file looked up with importlib.metadata (per reply, per hello)", ("importlib/metadata",)),
    ("first-use imports", ("_find_and_load",)),
    ("new SQLite connection per DB call", ("get_new_connection",)),
    ("Channels: close_old_connections before every event", ("aclose_old_connections",)),
    ("in-memory channel layer: _clean_expired scans every channel", ("_clean_expired",)),
    ("model stream client (huggingface_hub, httpx2, httpcore2, chat/backends)",
     ("huggingface_hub", "httpx2", "httpcore2", "h11/", "chat/backends/")),
    ("Markdown render + sanitize (chat/rendering)", ("chat/rendering.py",)),
    ("templates (django/template)", ("django/template",)),
    ("channel layer (group_send, receive)", ("channels/layers.py", "channels_redis", "redis/asyncio")),
    ("DB: search index updates (chat/search)", ("chat/search.py",)),
    ("DB: reply claim, heartbeat, release (chat/replies)", ("^claim (chat/replies", "^release (chat/replies",
                                                            "^_beat (chat/replies", "^recover_if_stale")),
    ("DB: sidebar metadata mirrored after a store write", ("_mirror_metadata",)),
    ("database queries (Django ORM, SQLite)", ("django/db",)),
    ("response compression (gzip)", ("gzip",)),
    ("sidebar and messages for the page (chat/views, chat/presenters)", ("chat/views.py", "chat/presenters.py")),
    ("transcript store (chat/store)", ("chat/store.py",)),
    ("consumer dispatch and send", ("channels/consumer.py", "consumers/chat.py", "channels/generic")),
    ("sessions and auth", ("channels/auth.py", "channels/sessions.py", "django/contrib/sessions")),
    ("WebSocket and TCP I/O (twisted, autobahn)", ("autobahn", "_readOrWrite", "daphne/ws_protocol",
                                                   "daphne/http_protocol")),
]
IDLE_LEAVES = ("select (selectors", "_worker (concurrent/futures/thread", "wait (threading", "epoll")


def _matches(frame: str, marker: str) -> bool:
    return frame.startswith(marker[1:]) if marker.startswith("^") else marker in frame


def classify(stack: list[str]) -> str:
    for name, markers in CATEGORIES:
        if any(_matches(frame, marker) for frame in stack for marker in markers):
            return name
    return "other (event loop, asyncio, misc.)"


def summarize(raw: Path) -> dict:
    """Busy samples per category (all threads) and the main thread's split, idle included."""
    busy, main = collections.Counter(), collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():  # py-spy writes a few frameless samples as " | 1 |"
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        idle = stack[-1].startswith(IDLE_LEAVES)
        kind = "idle (waiting)" if idle else classify(stack)
        if "MainThread" in stack[0]:
            main[kind] += count
        if not idle:
            busy[kind] += count
    return {"busy": busy, "main": main}


class Spy:
    """py-spy recording one process for `seconds` (started now, collected with .result())."""

    def __init__(self, pid: int, out: Path, seconds: float) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [PY_SPY, "record", "--nonblocking", "--idle", "--threads", "-r", "200", "-f", "raw", "-d",
             str(max(1, round(seconds))), "-p", str(pid), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def result(self) -> dict:
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if not self.out.exists():
            raise RuntimeError("py-spy wrote no profile (is ptrace allowed here?)")
        return summarize(self.out)


async def long_reply(server, user: dict, workdir: Path) -> tuple[dict, str]:
    tab = Tab(server.ws_url, token=user["token"])
    await tab.connect()
    try:
        await tab.turn(user["conversations"][1], "warm up #tokens=20 #markdown")
        spy = Spy(server.process.pid, workdir / "long-reply.txt", 9)
        with CpuMeter({"daphne": server.process.pid}) as meter:
            await tab.turn(user["conversations"][0], "#tokens=2000 #delay=0.005 #markdown", timeout=120)
    finally:
        await tab.close()
    return spy.result(), f"daphne CPU {meter.used['daphne'] / 2000 * 1e6:,.0f} µs per token"


def crowd(server, users: list[dict], workdir: Path, tokens: int) -> tuple[dict, str]:
    """§1's 200-conversation case (one user each, 20 tokens/s, started within a second), clients in bench.load."""
    scenario = Scenario("profile", "profile", len(users), tokens, CROWD_RATE, "one", None)
    spies: list[Spy] = []
    seconds = tokens / CROWD_RATE + STAGGER + 1

    def on_start() -> None:
        spies.append(Spy(server.process.pid, workdir / "crowd.txt", seconds))

    results = Load(workdir, "profile-crowd").run("sockets", tabs_for(scenario, users, [server.ws_url]),
                                                 on_start=on_start, timeout=tokens / CROWD_RATE * 12 + 30)
    replies = [(item["sent"], as_reply(item)) for item in results if not item["failure"]]
    first = [(reply.deltas[0][0] - sent) * 1000 for sent, reply in replies if reply.deltas]
    latency = [x for _, reply in replies for x in token_latencies(reply.deltas)]
    failed = len(results) - len(replies)
    return spies[0].result(), (
        f"{len(users)} conversations, {tokens} tokens at {CROWD_RATE:g} tokens/s, started within {STAGGER:g} s; "
        f"first token p50 {fmt(median(first), 0)} / p99 {fmt(percentile(first, 99), 0)} ms; latency per token "
        f"(model → tab) p50 {fmt(median(latency), 1)} / p99 {fmt(percentile(latency, 99), 1)} ms; {failed} failed")


def page(server, user: dict, workdir: Path) -> tuple[dict, str]:
    path = f"/c/{user['conversations'][0]}/"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Cookie": user["cookie"], "Host": "127.0.0.1"}
    connection.request("GET", path, headers=headers)
    connection.getresponse().read()
    spy = Spy(server.process.pid, workdir / "page.txt", 6)
    count, started = 0, time.monotonic()
    while time.monotonic() - started < 5 and count < 100:
        connection.request("GET", path, headers=headers)
        body = connection.getresponse().read()
        count += 1
    connection.close()
    return spy.result(), f"{count} requests in 5 s, {len(body) / 1024:,.0f} KiB each"


async def handshakes(server, cookie: str, workdir: Path, held: int) -> list[tuple[str, dict, str]]:
    """800 handshakes on a fresh process, then 600 more once `held` sockets are open."""
    gate = asyncio.Semaphore(100)
    tabs: list[Tab] = []

    async def connect(count: int) -> float:
        new = [Tab(server.ws_url, cookie=cookie, origin=server.url) for _ in range(count)]  # the page's own origin
        tabs.extend(new)

        async def one(tab: Tab) -> None:
            async with gate:
                try:
                    await tab.connect(timeout=60)
                except Exception:  # a handshake the server dropped: counted, the profile goes on
                    failures.append(tab)

        started = time.monotonic()
        await asyncio.gather(*(one(tab) for tab in new))
        return time.monotonic() - started

    out = []
    failures: list[Tab] = []
    try:
        spy = Spy(server.process.pid, workdir / "handshakes.txt", 4)
        took = await connect(800)
        out.append(("WebSocket handshakes on an idle process (session cookie, 100 at a time)", spy.result(),
                    f"800 sockets in {took:.1f} s ({800 / took:,.0f} handshakes/s, {len(failures)} failed)"))
        await connect(held - 800)
        failed_before = len(failures)
        spy = Spy(server.process.pid, workdir / "handshakes-held.txt", 4)
        took = await connect(600)
        out.append((f"WebSocket handshakes with {held - failed_before:,} sockets already open", spy.result(),
                    f"600 more sockets in {took:.1f} s ({600 / took:,.0f} handshakes/s, "
                    f"{len(failures) - failed_before} failed)"))
    finally:
        for tab in tabs:
            if tab.ws is not None:
                tab.ws.transport.abort()
            if tab._reader is not None:
                tab._reader.cancel()
    return out


def table(title: str, found: dict, detail: str) -> dict:
    busy_total = sum(found["busy"].values()) or 1
    main_total = sum(found["main"].values()) or 1
    names = [name for name, _ in (found["busy"] + found["main"]).most_common()]
    rows = [[name, f"{found['busy'][name] / busy_total * 100:.1f} %" if name in found["busy"] else "—",
             f"{found['main'][name] / main_total * 100:.1f} %" if name in found["main"] else "—"]
            for name in names if (found["busy"][name] / busy_total >= 0.01 or found["main"][name] / main_total >= 0.01)]
    return {"title": f"{title} — {detail}", "headers": ["where", "share of busy samples (all threads)",
                                                        "share of the main thread's time (idle included)"],
            "rows": rows}


def run(mode: str, workdir: Path) -> dict:
    result = report.section("profile", "Profiles of daphne (py-spy)")
    raise_fd_limit()
    if PY_SPY is None:
        result["error"] = "py-spy is not installed (pip install py-spy==0.4.1)"
        return result
    model = ModelServer(workdir, "model-server").start()
    try:
        relay_server = daphne(server_env(workdir / "relay", model.url), _mkdir(workdir / "relay"), "daphne-relay")
        try:
            one, many, warm, idle = seed(relay_server, {"groups": [
                {"prefix": "long", "users": 1, "conversations": 2},
                {"prefix": "crowd", "users": 200, "conversations": 1},
                {"prefix": "warm", "users": 1, "conversations": 1},
                {"prefix": "idle", "users": 1, "conversations": 1, "token": False, "cookie": True}]})["groups"]
            asyncio.run(warm_up([relay_server.ws_url], warm))
            found, detail = crowd(relay_server, many, workdir, TOKENS if mode == "full" else QUICK_TOKENS)
            result["tables"].append(table(f"§1's {len(many)}-conversation case", found, detail))
            found, detail = asyncio.run(long_reply(relay_server, one[0], workdir))
            result["tables"].append(table("One tab, a 2,000-token Markdown reply at 5 ms/token", found, detail))
            held = 5000 if mode == "full" else 2000
            for title, found, detail in asyncio.run(handshakes(relay_server, idle[0]["cookie"], workdir, held)):
                result["tables"].append(table(title, found, detail))
        finally:
            relay_server.stop()
        page_server = daphne(server_env(workdir / "pages", model.url, DEBUG="1"), _mkdir(workdir / "pages"),
                             "daphne-pages")
        try:
            heavy = seed(page_server, {"groups": [
                {"prefix": "heavy", "users": 1, "conversations": 10000, "transcripts": 1, "prior_messages": 20,
                 "token": False, "cookie": True}]})["groups"][0]
            found, detail = page(page_server, heavy[0], workdir)
            result["tables"].append(table("The chat page of a user with 10,000 conversations", found, detail))
        finally:
            page_server.stop()
    finally:
        model.stop()
    result["notes"] += [
        "Sampled with py-spy 0.4.1 at 200 Hz, --nonblocking --idle --threads, on the daphne process only.",
        "Categories are matched in a fixed order on the whole stack (bench/profile.py, CATEGORIES): a sample in "
        "ssl.create_default_context called from the model client counts as 'SSL context', not as 'model stream "
        "client'; a new SQLite connection opened for a session lookup counts as 'new SQLite connection'.",
    ]
    return result


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
