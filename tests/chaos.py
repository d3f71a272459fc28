"""Chaos: two daphne processes over a Redis of their own, concurrent conversations, and at
random moments a process gets SIGTERM or SIGKILL and is started again; Redis restarts
once (issue 15). Used by tests/test_chaos.py (short) and bench/chaos.py (long, numbers).

Each client drives one conversation: it sends a uniquely numbered message, follows the
reply until it ends, and after its socket dies reconnects to whichever process is up,
reopens the conversation and sends the message again only if the stored state does not
hold it. At the end `verify` reads the stored transcripts: every user message stored
exactly once, every reply in a final status and a prefix of what the model sent, no
conversation locked, and what each tab was last shown of a reply equal to what is stored.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chat.client.tab import Tab
from tests.live_server import LiveServer, free_port, server_env, stop_process

FINAL_STATUSES = {"complete", "cut", "stopped", "interrupted", "failed"}
LOST_SOCKET = (ConnectionError, ConnectionClosed, InvalidHandshake, OSError, TimeoutError)


def model_text(tokens: int) -> str:
    """What the scripted model sends for `#tokens=N`."""
    return " ".join(f"w{i}" for i in range(tokens))


class RedisServer:
    """A redis-server of the run's own, so that restarting it disturbs nobody else."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:  # the log line that says it accepts connections
            if "Ready to accept connections" in line:
                return
        raise RuntimeError(f"redis-server exited with {self.process.wait()}")

    def restart(self) -> None:
        stop_process(self.process)
        self.start()

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Client:
    """One tab's user driving one conversation through the chaos."""

    index: int
    conversation: str
    sent: list[str] = field(default_factory=list)  # contents of the user messages it meant to send
    shown: dict[str, dict] = field(default_factory=dict)  # reply id -> the last stored message a frame showed
    turns: int = 0
    reconnects: int = 0


@dataclass
class Chaos:
    workdir: Path
    model_url: str
    clients: int = 20
    tokens: int = 60
    delay: float = 0.03
    seed: int = 15
    env: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.redis = RedisServer(self.workdir)
        self.servers: list[LiveServer] = []
        self.up: list[bool] = []
        self.token = ""

    # --- servers -------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        env = server_env(self.workdir, self.model_url, REDIS_URL=self.redis.url, REDIS_PREFIX="chaos",
                         CHAT_RATE_LIMIT_MESSAGES="100000", CHAT_RATE_LIMIT_FRAMES="100000",
                         HF_DAILY_REQUESTS_PER_USER="0", HF_DAILY_REQUESTS_SITE="0", **self.env)
        self.servers = [LiveServer(env, log_path=self.workdir / f"daphne-{i}.log") for i in range(2)]
        self.servers[0].manage("migrate", "--noinput")
        self.token = self.servers[0].create_token("chaos")
        for server in self.servers:
            server.start()
        self.up = [True, True]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.redis.stop()

    def url(self) -> str:
        choices = [s.ws_url for s, up in zip(self.servers, self.up, strict=True) if up]
        return self.random.choice(choices or [self.servers[0].ws_url])

    async def monkey(self, until: float, pause: tuple[float, float]) -> None:
        """Until `until`: every few seconds SIGTERM or SIGKILL one process, then start it again;
        restart Redis once, halfway."""
        redis_at = time.monotonic() + (until - time.monotonic()) / 2
        while time.monotonic() < until:
            await asyncio.sleep(self.random.uniform(*pause))  # chaos is random by design, not a wait for an event
            if redis_at and time.monotonic() >= redis_at:
                redis_at = 0
                await asyncio.to_thread(self.redis.restart)
                self.events.append((time.time(), "redis restarted"))
                continue
            which = self.random.randrange(2)
            how = self.random.choice([signal.SIGTERM, signal.SIGKILL])
            server = self.servers[which]
            self.up[which] = False
            signalled = time.monotonic()
            os.kill(server.process.pid, how)
            await asyncio.to_thread(server.process.wait, 30)
            self.events.append((time.time(), f"{how.name} process {which}: exited in {time.monotonic() - signalled:.2f} s"))
            await asyncio.to_thread(server.start)
            self.up[which] = True

    # --- clients -------------------------------------------------------------------

    async def new_client(self, index: int) -> Client:
        tab = await Tab.open(self.url(), self.token)
        content = f"chaos {index} setup #tokens=3"
        ref = f"setup-{index}"
        await tab.send("message.send", conversation=None, content=content, ref=ref)
        created = await tab.receive("conversation.created", ref=ref)  # every tab of the user hears of every new one
        await tab.follow_reply()
        await tab.close()
        return Client(index, created["conversation"]["id"], sent=[content])

    async def run_client(self, client: Client, until: float) -> None:
        tab: Tab | None = None
        pending: str | None = None  # a message that may not be stored yet
        while time.monotonic() < until or pending is not None:
            if time.monotonic() > until + 60:
                raise AssertionError(f"client {client.index} could not finish its last turn: {pending!r}")
            try:
                if tab is None or tab.closed_with is not None:
                    tab, state = await self._reopen(client, tab)
                    if pending is not None and pending in [m["content"] for m in state["messages"]]:
                        pending = None  # stored before the socket died: never send it twice
                    if state["generating"] is not None:
                        await self._follow(client, tab)
                    continue
                if pending is None:
                    if time.monotonic() >= until:
                        return
                    client.turns += 1
                    pending = f"chaos {client.index} turn {client.turns} #tokens={self.tokens} #delay={self.delay}"
                    client.sent.append(pending)
                start = len(tab.inbox)
                await tab.send("message.send", conversation=client.conversation, content=pending)
                index, _, frame = await self._first_of(tab, ("message.created", "error"), start)
                if frame["type"] == "error":
                    if frame["code"] not in ("busy", "storage_unavailable", "rate_limited"):
                        raise AssertionError(f"client {client.index}: {frame}")
                    await tab.close()  # reopen: the state says whether a reply still runs
                    tab = None
                    continue
                pending = None
                tab._cursor = index + 1
                await self._follow(client, tab)
            except LOST_SOCKET as error:
                if tab is not None:
                    await tab.close()
                tab, client.reconnects = None, client.reconnects + 1
                self.events.append((time.time(), f"client {client.index}: {type(error).__name__}"))
        if tab is not None:
            await tab.close()

    async def _reopen(self, client: Client, old: Tab | None) -> tuple[Tab, dict]:
        """A new socket on a process that is up, and the conversation's state."""
        if old is not None:
            await old.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                tab = await Tab.open(self.url(), self.token, timeout=5)
                await tab.send("conversation.open", conversation=client.conversation)
                state = await tab.receive("conversation.state", timeout=10)
                for message in state["messages"]:
                    if message["role"] == "assistant":
                        client.shown[message["id"]] = message
                return tab, state
            except LOST_SOCKET:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)  # a process restarting: try the other one, or again

    async def _first_of(self, tab: Tab, types: tuple[str, ...], start: int) -> tuple[int, float, dict]:
        while True:
            index, arrived, frame = await tab.wait(None, timeout=20, start=start)
            if frame["type"] in types:
                return index, arrived, frame
            start = index + 1

    async def _follow(self, client: Client, tab: Tab) -> None:
        """Follow a reply until it ends; a newer state (a recovered claim) ends it too. Silence
        longer than a stale claim (a lost group after a Redis restart) raises TimeoutError."""
        while True:
            frame = await tab.next_frame(timeout=15)
            if frame["type"] in ("reply.completed", "reply.failed"):
                client.shown[frame["message"]["id"]] = frame["message"]
                return
            if frame["type"] == "conversation.state":
                for message in frame["messages"]:
                    if message["role"] == "assistant":
                        client.shown[message["id"]] = message
                if frame["generating"] is None:
                    return

    # --- the end ---------------------------------------------------------------------

    def transcript(self, conversation: str) -> dict:
        [path] = self.workdir.glob(f"conversations/**/{conversation}.json")
        return json.loads(path.read_text())

    async def verify(self, clients: list[Client]) -> dict:
        """Check everything the issue asks for after the chaos; returns counts."""
        statuses: dict[str, int] = {}
        unlocked_after: list[float] = []
        started = time.monotonic()
        for client in clients:
            # A claim left by a killed process: the tab shows its checkpoint, then the
            # recovered reply once the claim is stale; then the conversation takes a message.
            tab, state = await self._reopen(client, None)
            if state["generating"] is not None:
                await self._follow(client, tab)
            await tab.send("message.send", conversation=client.conversation, content=f"chaos {client.index} last #tokens=2")
            await tab.receive("message.created")
            unlocked_after.append(time.monotonic() - started)
            text, final = await tab.follow_reply()
            assert final["type"] == "reply.completed" and text == "w0 w1", final
            await tab.close()
            client.sent.append(f"chaos {client.index} last #tokens=2")

            stored = self.transcript(client.conversation)
            users = [m["content"] for m in stored["messages"] if m["role"] == "user"]
            for content in client.sent:
                assert users.count(content) == 1, f"{content!r} stored {users.count(content)} times"
            assert len(users) == len(client.sent), (users, client.sent)
            for message in stored["messages"]:
                if message["role"] != "assistant":
                    continue
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1
                assert message["status"] in FINAL_STATUSES, message
                assert model_text(max(self.tokens, 3)).startswith(message["content"]), message
                seen = client.shown.get(message["id"])
                if seen is not None and seen["status"] in FINAL_STATUSES:
                    assert seen["content"] == message["content"], (seen, message)
        return {"statuses": statuses, "seconds_until_all_usable": round(max(unlocked_after), 2)}


async def run(chaos: Chaos, seconds: float, pause: tuple[float, float] = (3.0, 6.0)) -> dict:
    """Run the chaos for `seconds` and verify; returns the numbers (raises on a broken promise)."""
    clients = await asyncio.gather(*(chaos.new_client(i) for i in range(chaos.clients)))
    until = time.monotonic() + seconds
    await asyncio.gather(chaos.monkey(until, pause), *(chaos.run_client(c, until) for c in clients))
    result = await chaos.verify(list(clients))
    result.update(turns=sum(c.turns for c in clients), reconnects=sum(c.reconnects for c in clients),
                  events=[e for _, e in chaos.events if not e.startswith("client")])
    return result


def new_run_dir(base: Path) -> Path:
    path = base / f"chaos-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path
