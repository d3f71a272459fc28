"""The scenarios of issue 14 (§1 of the report), their parameters and their targets.

Full run: the issue's counts. Quick run: smaller counts and shorter replies at the same
rates, each labelled with what the full run does (its figures are a smoke test, not the
issue's measurement).
"""
from __future__ import annotations

from dataclasses import dataclass

TOKENS = 150  # tokens per reply (full run)
QUICK_TOKENS = 40


def prompt(tokens: int, delay: float) -> str:
    return f"Explain the relay, please. #tokens={tokens} #delay={delay} #markdown #stamp"


# How each kind of server is run. "one" and "serve2" run the Procfile's launcher
# (python -m config.serve); "pair" is two daphne processes on two ports, so that every
# conversation can have a tab on each process.
SERVER_KINDS = {
    "one": {"processes": 1, "redis": False, "what": "1 daphne process, in-memory channel layer"},
    "serve1r": {"processes": 1, "redis": True, "what": "1 daphne process, Redis channel layer"},
    "serve2": {"processes": 2, "redis": True, "what": "config.serve: 2 daphne processes on one port, Redis"},
    "pair": {"processes": 2, "redis": True, "what": "2 daphne processes on two ports, Redis"},
}


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    conversations: int
    tokens: int
    rate: float  # tokens/s of each reply
    server: str  # a SERVER_KINDS key
    limit_ms: float | None  # the limit on added p99 (None: a reference scenario, no target)
    watchers: int = 0  # tabs on each conversation besides the sender's (on the next process)
    one_user: bool = False  # all conversations belong to one user (its tabs), else one user each
    rate_check: bool = False  # the ≥ 95 % of direct delivery rate target
    first_token: bool = False  # the first-token targets (p50 ≤ 300 ms, p99 ≤ 1 s)
    cpu_reference: str | None = None  # the key of the scenario whose CPU per token this one may use 1.5×
    processes_reference: str | None = None  # the key of the same load on one process (1 vs 2 processes)
    slack: float = 12  # a reply may take this many times its nominal length (+ 30 s) before it counts as failed

    @property
    def delay(self) -> float:
        return round(1 / self.rate, 6)

    @property
    def shape(self) -> tuple:
        """Scenarios of one shape share one direct baseline."""
        return (self.conversations, self.tokens, self.rate)


def _plan(quick: bool) -> list[Scenario]:
    tokens = QUICK_TOKENS if quick else TOKENS

    def n(full: int, small: int) -> int:
        return small if quick else full

    def label(text: str, full: int, small: int) -> str:
        return text.format(n=n(full, small)) + (f" [quick; full run: {full:,}]" if quick and small != full else "")

    plan = [
        Scenario("c50", label("{n} conversations, 20 tok/s", 50, 50), n(50, 50), tokens, 20, "one", 10.0),
        Scenario("c200", label("{n} conversations, 20 tok/s", 200, 100), n(200, 100), tokens, 20, "one", 20.0,
                 rate_check=True, first_token=True),
        Scenario("tabs200", label("one user, {n} tabs, each its own conversation, 20 tok/s", 200, 50), n(200, 50),
                 tokens, 20, "one", 50.0, one_user=True),
        Scenario("w100", label("1 process, {n} conversations × 2 tabs, 20 tok/s", 100, 20), n(100, 20), tokens, 20,
                 "one", None, watchers=1),
    ]
    if not quick:
        plan.append(Scenario("c500", "500 conversations, 10 tok/s", 500, tokens, 10, "one", 20.0))
        plan.append(Scenario("c200r", "200 conversations, 1 process + Redis, 20 tok/s", 200, tokens, 20, "serve1r",
                             None, processes_reference="c200"))
    plan += [
        Scenario("c200x2", label("{n} conversations, 2 processes on one port (config.serve, Redis), 20 tok/s", 200, 100),
                 n(200, 100), tokens, 20, "serve2", 20.0, first_token=True, processes_reference="c200"),
        Scenario("pair", label("2 processes + Redis, {n} conversations × a tab on each, 20 tok/s", 100, 20),
                 n(100, 20), tokens, 20, "pair", 30.0, watchers=1, cpu_reference="w100", slack=5),
    ]
    return plan


PLANS = {"quick": _plan(True), "full": _plan(False)}
FIRST_TOKEN_P50_MS = 300.0
FIRST_TOKEN_P99_MS = 1000.0
RATE_LIMIT_PCT = 95.0
CPU_RATIO_ALLOWED = 1.5
