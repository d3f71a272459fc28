"""Client processes that generate a scenario's load: `python -m bench.load` (one per CPU share).

The clients never run in the server's process, nor in the section's: a few hundred
sockets receiving 20 tokens/s each cost a client process a good part of a core, and a
client that falls behind reads its frames late and blames the server. So a scenario
is split over `CLIENT_PROCESSES` processes; each connects its share of the sockets,
says `ready`, waits for `go <wall-clock start>`, runs, and writes what it saw as JSON.
The section process (`Load`) starts them, releases them together, and measures their
CPU next to the server's, so the report shows whether the clients kept up.

Two kinds of load, with the same client code whichever is measured:
- `sockets`: tabs (`bench.clients.Tab`); a `send` tab sends one message at start +
  `offset` and follows its reply, a watcher opens its conversation first and follows
  the first reply that starts there.
- `direct`: the same prompts read straight from the scripted model (the baseline).
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench.clients import DirectStream, direct_stream
from bench.servers import REPO, cpu_seconds
from chat.client.tab import Reply, Tab

CLIENT_PROCESSES = 2
CONNECT_CONCURRENCY = 25  # handshakes in flight per client process (50 in all, as before the split)
START_DELAY = 0.5  # seconds between `go` and the load's start: every process has read it by then


# --- in the client process ------------------------------------------------------------


async def _connect(tabs: list[tuple[Tab, dict]]) -> dict[int, str]:
    """Connect every tab (watchers also open their conversation); {index: why} of those that failed."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failed: dict[int, str] = {}

    async def one(index: int, tab: Tab, spec: dict) -> None:
        async with gate:
            try:
                await tab.connect(timeout=60)
                if not spec.get("send"):
                    start = len(tab.inbox)
                    await tab.send("conversation.open", conversation=spec["conversation"])
                    await tab.wait("conversation.state", start=start, timeout=60)
            except Exception as error:  # a refused or timed-out handshake is a failure to report, not a crash
                failed[index] = f"connect: {type(error).__name__}: {error}"

    await asyncio.gather(*(one(i, tab, spec) for i, (tab, spec) in enumerate(tabs)))
    return failed


async def _follow(tab: Tab, spec: dict, start_at: float, timeout: float) -> dict:
    """One tab's part: its reply as it saw it, or why it failed."""
    out = {"send": bool(spec.get("send")), "conversation": spec["conversation"], "sent": None, "failure": None}
    try:
        if spec.get("send"):
            await asyncio.sleep(max(0.0, start_at + spec["offset"] - time.time()))
            out["sent"], reply = await tab.turn(spec["conversation"], spec["prompt"], timeout=timeout)
        else:
            _, _, started = await tab.wait("reply.started", timeout=timeout, conversation=spec["conversation"])
            reply = await tab.wait_reply(started["message"], timeout=timeout)
        out.update(message=reply.message, started=reply.started, deltas=reply.deltas, seqs=reply.seqs,
                   ended=reply.ended, final=reply.final["type"] if reply.final else None)
    except (TimeoutError, ConnectionError) as error:
        out["failure"] = f"{type(error).__name__}: {error}"
    return out


async def _sockets(spec: dict) -> list[dict]:
    tabs = [(Tab(t["url"], token=t["token"]), t) for t in spec["tabs"]]
    failed = await _connect(tabs)
    start_at = _ready_then_go()

    async def follow(index: int, tab: Tab, t: dict) -> dict:
        if index in failed:
            return {"send": bool(t.get("send")), "conversation": t["conversation"], "sent": None,
                    "failure": failed[index]}
        return await _follow(tab, t, start_at, spec["timeout"])

    try:
        return list(await asyncio.gather(*(follow(i, tab, t) for i, (tab, t) in enumerate(tabs))))
    finally:
        await asyncio.gather(*(tab.close() for tab, _ in tabs))


async def _direct(spec: dict) -> list[dict]:
    start_at = _ready_then_go()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(stream: dict) -> dict:
            await asyncio.sleep(max(0.0, start_at + stream["offset"] - time.time()))
            try:
                record = await direct_stream(session, spec["model_url"], stream["prompt"], spec["model"],
                                             timeout=spec["timeout"])
            except (TimeoutError, aiohttp.ClientError) as error:
                return {"failure": f"{type(error).__name__}: {error}"}
            return {"requested": record.requested, "pieces": record.pieces, "ended": record.ended, "failure": None}

        return list(await asyncio.gather(*(one(s) for s in spec["streams"])))


def _ready_then_go() -> float:
    """Tell the section this process is ready; block until it says when to start (wall clock)."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline().split()
    if line[:1] != ["go"]:
        raise SystemExit(f"bench.load: expected 'go <time>', got {line}")
    return float(line[1])


def child_main() -> None:
    spec = json.loads(sys.stdin.readline())
    runner = _sockets if spec["kind"] == "sockets" else _direct
    results = asyncio.run(runner(spec))
    Path(spec["result"]).write_text(json.dumps(results))
    sys.stdout.write("done\n")
    sys.stdout.flush()


# --- in the section process --------------------------------------------------------------


class Load:
    """Run one load split over client processes: `Load(workdir, name).run(kind, items, **spec)`."""

    def __init__(self, workdir: Path, name: str, processes: int = CLIENT_PROCESSES) -> None:
        self.workdir, self.name, self.processes = workdir, name, processes
        self.pids: list[int] = []
        self.cpu: float = 0.0  # CPU seconds the client processes used from `go` to their end

    def run(self, kind: str, items: list[dict], on_start=None, **spec) -> list[dict]:
        """Split `items` (tabs or streams) round-robin over the processes, run them, return every result.

        `on_start()` is called just before `go` (e.g. to start a CPU meter or a profiler)."""
        shares = [items[i::self.processes] for i in range(self.processes)]
        shares = [share for share in shares if share]
        children = []
        try:
            for i, share in enumerate(shares):
                log = open(self.workdir / f"{self.name}-client{i}.log", "ab")
                child = subprocess.Popen([sys.executable, "-m", "bench.load"], cwd=REPO, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True)
                log.close()
                result = self.workdir / f"{self.name}-client{i}.json"
                key = "tabs" if kind == "sockets" else "streams"
                child.stdin.write(json.dumps({"kind": kind, key: share, "result": str(result), **spec}) + "\n")
                child.stdin.flush()
                children.append((child, result, i))
            for child, _, i in children:
                self._expect(child, "ready", i)
            self.pids = [child.pid for child, _, _ in children]
            if on_start is not None:
                on_start()
            before = sum(cpu_seconds(pid) for pid in self.pids)
            start_at = time.time() + START_DELAY
            for child, _, _ in children:
                child.stdin.write(f"go {start_at}\n")
                child.stdin.flush()
            cpu = 0.0
            for child, _, i in children:
                self._expect(child, "done", i)
                cpu += cpu_seconds(child.pid)
            self.cpu = cpu - before
            out = []
            for child, result, _ in children:
                child.wait(30)
                out += json.loads(result.read_text())
            return out
        finally:
            for child, _, _ in children:
                if child.poll() is None:
                    child.kill()
                    child.wait(10)

    def _expect(self, child: subprocess.Popen, word: str, index: int) -> None:
        line = child.stdout.readline().strip()
        if line != word:
            child.wait(10)
            log = (self.workdir / f"{self.name}-client{index}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"client process {index} of {self.name} said {line!r}, not {word!r} "
                               f"(exit {child.returncode}):\n{log}")


def as_reply(item: dict) -> Reply:
    reply = Reply(item.get("message") or "")
    reply.started, reply.ended = item.get("started"), item.get("ended")
    reply.deltas = [tuple(piece) for piece in item.get("deltas") or []]
    reply.seqs = item.get("seqs") or []
    reply.final = {"type": item["final"]} if item.get("final") else None
    return reply


def as_direct(item: dict) -> DirectStream:
    stream = DirectStream(item["requested"])
    stream.pieces = [tuple(piece) for piece in item["pieces"]]
    stream.ended = item["ended"]
    return stream


if __name__ == "__main__":
    child_main()
