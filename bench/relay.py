"""1. Relay under load (issue 14): what the server adds to every token between the model and the tabs.

The scripted model streams Markdown at a fixed rate and stamps every word token with
its send time (`#stamp`); real WebSocket clients in two client processes of their own
(bench/load.py) read the replies from real daphne processes. Every scenario's replies
start within one second. Before the scenarios of one shape (conversations, tokens,
rate), the same client processes read the same replies straight from the model, at the
same concurrency and staggering: the direct baseline, in the same run. Added latency
per token = its latency through the server − the baseline's median latency; delivered
rate = tokens/s through the server ÷ direct; first token = `message.send` → first
`reply.delta`, next to the model's own first token read directly.
"""
from __future__ import annotations

import asyncio
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.clients import delivered_rate, seq_errors, token_latencies
from bench.load import Load, as_direct, as_reply
from bench.relay_plan import PLANS, SERVER_KINDS, Scenario, prompt
from bench.servers import FAKE_MODEL, REDIS_URL, CpuMeter, ModelServer, daphne, raise_fd_limit, seed, serve, server_env
from bench.stats import median, percentile
from chat.client.tab import Tab
from tests.fake_model_server import STAMPABLE, markdown_tokens

STAGGER = 1.0  # every scenario's replies start within this many seconds
WARM_UP_USERS = 8  # a few short replies first, so that every process has its imports and caches


def stamped_share(tokens: int) -> float:
    """All tokens per stamped token of a `#markdown` reply (rates are counted on stamped ones)."""
    words = markdown_tokens(tokens)
    return len(words) / max(1, sum(1 for w in words if STAMPABLE.fullmatch(w)))


@dataclass
class Outcome:
    """What one scenario measured: the replies every tab saw, the baseline, CPU."""

    scenario: Scenario
    direct: list = field(default_factory=list)  # DirectStream
    direct_failures: int = 0
    seen: list = field(default_factory=list)  # clients.Reply, one per tab
    sent: list = field(default_factory=list)  # (send time, Reply) of the tabs that sent
    failures: list[str] = field(default_factory=list)
    server_cpu: float = float("nan")
    client_cpu: float = float("nan")
    model_cpu: float = float("nan")
    seconds: float = 0.0
    dropped: int = 0  # "over capacity" lines in the servers' logs (channels_redis drops those messages)

    def measure(self) -> dict:
        s = self.scenario
        direct_lat = [x for stream in self.direct for x in token_latencies(stream.pieces)]
        relay_lat = [x for reply in self.seen for x in token_latencies(reply.deltas)]
        base = median(direct_lat)
        added = [x - base for x in relay_lat]
        share = stamped_share(s.tokens)
        direct_rate = median([delivered_rate(d.pieces) for d in self.direct]) * share
        relay_rate = median([delivered_rate(r.deltas) for r in self.seen if r.deltas]) * share
        deltas = sum(len(r.deltas) for r in self.seen)
        first = [(reply.deltas[0][0] - sent) * 1000 for sent, reply in self.sent if reply.deltas]
        direct_first = [d.first_token * 1000 for d in self.direct]
        delivered = sum(1 for r in self.seen if r.final and r.final["type"] == "reply.completed") * s.tokens
        expected_tabs = s.conversations * (1 + s.watchers)
        return {
            "direct_p50": base, "direct_p99": percentile(direct_lat, 99), "direct_samples": len(direct_lat),
            "relay_p50": median(relay_lat), "relay_p99": percentile(relay_lat, 99),
            "added_p50": median(added), "added_p99": percentile(added, 99), "samples": len(relay_lat),
            "direct_rate": direct_rate, "relay_rate": relay_rate,
            "ratio": relay_rate / direct_rate * 100 if direct_rate else float("nan"),
            "tokens_per_delta": (len(self.seen) * s.tokens / deltas) if deltas else float("nan"),
            "first_p50": median(first), "first_p99": percentile(first, 99), "first_samples": len(first),
            "direct_first_p50": median(direct_first), "direct_first_p99": percentile(direct_first, 99),
            "gapped": sum(1 for r in self.seen if seq_errors(r.seqs)),
            "incomplete": expected_tabs - sum(1 for r in self.seen if r.final and r.final["type"] == "reply.completed"),
            "tab_replies": expected_tabs,
            "server_cpu": self.server_cpu / self.seconds if self.seconds else float("nan"),
            "client_cpu": self.client_cpu / self.seconds if self.seconds else float("nan"),
            "model_cpu": self.model_cpu / self.seconds if self.seconds else float("nan"),
            "us_per_token": self.server_cpu / delivered * 1e6 if delivered else float("nan"),
        }


# --- one scenario -------------------------------------------------------------------------


def direct_baseline(workdir: Path, model: ModelServer, s: Scenario) -> tuple[list, int]:
    """The scenario's replies read straight from the model, by the same client processes."""
    streams = [{"offset": STAGGER * i / s.conversations, "prompt": prompt(s.tokens, s.delay)}
               for i in range(s.conversations)]
    results = Load(workdir, f"direct-{s.key}").run("direct", streams, model_url=model.url, model=FAKE_MODEL,
                                                    timeout=s.tokens * s.delay * 20 + 60)
    return [as_direct(r) for r in results if not r["failure"]], sum(1 for r in results if r["failure"])


def tabs_for(s: Scenario, users: list[dict], urls: list[str]) -> list[dict]:
    """Every socket of the scenario: a sender per conversation (and `watchers` more tabs on it).

    With several URLs (one per process), senders alternate between them and a
    conversation's watcher is on the next one."""
    tabs = []
    for i in range(s.conversations):
        user = users[0] if s.one_user else users[i]
        conversation = user["conversations"][i if s.one_user else 0]
        offset = STAGGER * i / s.conversations
        tabs.append({"url": urls[i % len(urls)], "token": user["token"], "conversation": conversation, "send": True,
                     "offset": offset, "prompt": prompt(s.tokens, s.delay)})
        for w in range(s.watchers):
            tabs.append({"url": urls[(i + 1 + w) % len(urls)], "token": user["token"], "conversation": conversation,
                         "send": False})
    return tabs


def run_scenario(workdir: Path, outcome: Outcome, servers: list, users: list[dict], model: ModelServer) -> None:
    s = outcome.scenario
    urls = [server.ws_url for server in servers]
    daphne_pids = [pid for server in servers for pid in getattr(server, "pids", [server.process.pid])]
    meter = CpuMeter({**{f"daphne{i}": pid for i, pid in enumerate(daphne_pids)}, "model": model.pid})
    load = Load(workdir, s.key)
    started = [0.0]

    def on_start() -> None:
        meter.__enter__()
        started[0] = time.monotonic()

    timeout = s.tokens * s.delay * s.slack + 30
    results = load.run("sockets", tabs_for(s, users, urls), on_start=on_start, timeout=timeout)
    meter.__exit__(None, None, None)
    outcome.seconds = time.monotonic() - started[0]
    outcome.server_cpu = sum(v for k, v in meter.used.items() if k.startswith("daphne"))
    outcome.model_cpu = meter.used.get("model", float("nan"))
    outcome.client_cpu = load.cpu
    for item in results:
        if item["failure"]:
            outcome.failures.append(item["failure"])
            continue
        reply = as_reply(item)
        outcome.seen.append(reply)
        if item["send"]:
            outcome.sent.append((item["sent"], reply))
    outcome.dropped = sum(server.log().count("over capacity") for server in servers)


async def warm_up(urls: list[str], users: list[dict]) -> None:
    """One short reply per user, spread over the URLs: first-use imports and caches are not measured."""
    tabs = [Tab(urls[i % len(urls)], token=user["token"]) for i, user in enumerate(users)]
    await asyncio.gather(*(tab.connect() for tab in tabs))
    try:
        await asyncio.gather(*(tab.turn(user["conversations"][0], "warm up #tokens=5 #markdown")
                               for tab, user in zip(tabs, users)))
    finally:
        await asyncio.gather(*(tab.close() for tab in tabs))


# --- servers -------------------------------------------------------------------------


def start_servers(kind: str, workdir: Path, model: ModelServer, prefix: str) -> list:
    """The server processes of one kind (see relay_plan.SERVER_KINDS)."""
    folder = workdir / kind
    folder.mkdir()
    redis = {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix} if SERVER_KINDS[kind]["redis"] else {}
    env = server_env(folder, model.url, **redis)
    if kind == "pair":  # two daphne processes on two ports: a tab can be put on each
        first = daphne(env, workdir, f"daphne-{kind}-1")
        try:
            return [first, daphne(env, workdir, f"daphne-{kind}-2", migrate=False)]
        except Exception:
            first.stop()
            raise
    return [serve(env, workdir, f"serve-{kind}", SERVER_KINDS[kind]["processes"])]


def forget_redis_keys(prefix: str) -> None:
    """Delete this run's keys (groups live a day in Redis otherwise); only keys under its own prefix."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()


def measure_all(mode: str, workdir: Path) -> list[Outcome]:
    plan = PLANS[mode]
    outcomes: list[Outcome] = []
    baselines: dict[tuple, tuple[list, int]] = {}
    model = ModelServer(workdir, "model-server").start()
    try:
        for kind in dict.fromkeys(s.server for s in plan):  # server kinds in the plan's order
            scenarios = [s for s in plan if s.server == kind]
            prefix = f"bench-{random.getrandbits(40):010x}"
            servers = start_servers(kind, workdir, model, prefix)
            try:
                groups = [{"prefix": f"warm-{kind}-", "users": WARM_UP_USERS, "conversations": 1}]
                groups += [{"prefix": f"{s.key}-", "users": 1 if s.one_user else s.conversations,
                            "conversations": s.conversations if s.one_user else 1} for s in scenarios]
                warm, *seeded = seed(servers[0], {"groups": groups})["groups"]
                asyncio.run(warm_up([server.ws_url for server in servers], warm))
                for s, users in zip(scenarios, seeded):
                    outcome = Outcome(s)
                    if s.shape not in baselines:
                        baselines[s.shape] = direct_baseline(workdir, model, s)
                    outcome.direct, outcome.direct_failures = baselines[s.shape]
                    print(f"relay: {s.label}", flush=True)
                    try:
                        run_scenario(workdir, outcome, servers, users, model)
                    except Exception as error:  # reported as this scenario's failure; the others still run
                        traceback.print_exc()
                        outcome.failures.append(f"the scenario failed: {error!r}"[:300])
                    outcomes.append(outcome)
            finally:
                for server in servers:
                    server.stop()
                if SERVER_KINDS[kind]["redis"]:
                    forget_redis_keys(prefix)
    finally:
        model.stop()
    return outcomes


def run(mode: str, workdir: Path) -> dict:
    from bench.relay_report import section

    raise_fd_limit()
    return section(mode, measure_all(mode, workdir))
