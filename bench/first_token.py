"""3. Time to first token: from `message.send` to the first `reply.delta`, minus the model's own.

The model's own first-token time is measured in the same run by the same client reading
the scripted model directly (request sent → first content chunk), interleaved with the
turns through the server. Measured with the local folder store and with S3 (moto on
loopback, in a process of its own), for a message in an existing conversation and for a
message that starts a new one (which also creates the transcript). Then many
conversations, one user each, send their message at the same instant (harsher than §1,
whose 200 replies start spread over a second): every turn's database writes and
model request queue behind the others'.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bench import report
from bench.clients import direct_stream
from bench.servers import FAKE_MODEL, CpuMeter, ModelServer, MotoServer, daphne, raise_fd_limit, seed, server_env
from bench.stats import fmt, median, percentile
from chat.client.tab import Tab

PROMPT = "First token, please. #tokens=20"
LIMIT_MS = 5.0  # issue 14: one conversation alone, added before the first token
REFERENCE_MS = 3.0  # LiteLLM proxy's added latency per request (field notes)
TURNS = {"quick": 5, "full": 25}
AT_ONCE = {"quick": (100, 2), "full": (200, 4)}  # (conversations started at the same instant, rounds)
AT_ONCE_TOKENS = 2  # a short reply: its end falls inside the burst too
AT_ONCE_PROMPT = f"All at once. #tokens={AT_ONCE_TOKENS}"
AT_ONCE_P50_MS, AT_ONCE_P99_MS = 300.0, 1000.0  # issue 14's first-token limits for 200 conversations


async def measure(server, model_url: str, user: dict, turns: int) -> dict:
    """Interleave direct reads and turns through the server; return the samples in ms."""
    samples = {"direct": [], "existing": [], "new": []}
    tab = Tab(server.ws_url, token=user["token"])
    await tab.connect()
    try:
        conversation = user["conversations"][0]
        await tab.turn(conversation, "warm up #tokens=3")  # imports, the model client, the first writes
        async with aiohttp.ClientSession() as session:
            for _ in range(turns):
                stream = await direct_stream(session, model_url, PROMPT, FAKE_MODEL)
                samples["direct"].append(stream.first_token * 1000)
                sent, reply = await tab.turn(conversation, PROMPT)
                samples["existing"].append((reply.deltas[0][0] - sent) * 1000)
                start = len(tab.inbox)
                sent, reply = await tab.turn(None, PROMPT)
                samples["new"].append((reply.deltas[0][0] - sent) * 1000)
                # A new conversation is titled after its reply: let that finish before the next sample.
                await tab.wait("conversation.updated", start=start, timeout=30)
    finally:
        await tab.close()
    return samples


async def measure_store(workdir: Path, model: ModelServer, turns: int, extra_env: dict, name: str) -> dict:
    folder = workdir / name
    folder.mkdir()
    server = daphne(server_env(folder, model.url, **extra_env), workdir, f"daphne-{name}")
    try:
        user = seed(server, {"groups": [{"prefix": f"ttft-{name}", "users": 1, "conversations": 1}]})["groups"][0][0]
        return await measure(server, model.url, user, turns)
    finally:
        server.stop()


async def measure_at_once(server, users: list[dict], rounds: int) -> dict:
    """Every user's tab sends a message at the same instant, `rounds` times: ms from each send
    to its first delta, and daphne's CPU per turn (the short reply's end included)."""
    tabs = [Tab(server.ws_url, token=user["token"]) for user in users]
    try:
        for i in range(0, len(tabs), 50):
            await asyncio.gather(*(tab.connect() for tab in tabs[i:i + 50]))
        await asyncio.gather(*(tab.turn(user["conversations"][-1], "warm up #tokens=2")
                               for tab, user in zip(tabs[:20], users)))
        first, cpu = [], 0.0
        for r in range(rounds):
            with CpuMeter({"daphne": server.process.pid}) as meter:
                turns = await asyncio.gather(*(tab.turn(user["conversations"][r], AT_ONCE_PROMPT, timeout=120)
                                               for tab, user in zip(tabs, users)))
            cpu += meter.used["daphne"]
            first += [(reply.deltas[0][0] - sent) * 1000 for sent, reply in turns if reply.deltas]
    finally:
        await asyncio.gather(*(tab.close() for tab in tabs))
    return {"first": first, "turns": rounds * len(tabs), "cpu_ms": cpu / (rounds * len(tabs)) * 1000}


def at_once(workdir: Path, model: ModelServer, conversations: int, rounds: int) -> dict:
    folder = workdir / "at-once"
    folder.mkdir()
    server = daphne(server_env(folder, model.url), workdir, "daphne-at-once")
    try:
        users = seed(server, {"groups": [{"prefix": "once", "users": conversations,
                                          "conversations": rounds + 1}]})["groups"][0]
        return asyncio.run(measure_at_once(server, users, rounds))
    finally:
        server.stop()


def run(mode: str, workdir: Path) -> dict:
    result = report.section("first_token", "3. Time to first token")
    turns = TURNS[mode]
    raise_fd_limit()
    model = ModelServer(workdir, "model-server").start()
    moto = None
    try:
        conversations, rounds = AT_ONCE[mode]
        crowd = at_once(workdir, model, conversations, rounds)
        stores = {"local folder": asyncio.run(measure_store(workdir, model, turns, {}, "local"))}
        moto = MotoServer(workdir, "moto").start()
        stores["S3 (moto)"] = asyncio.run(measure_store(workdir, model, turns, moto.env(), "s3"))
    finally:
        if moto is not None:
            moto.stop()
        model.stop()
    rows = []
    for store, samples in stores.items():
        base = median(samples["direct"])
        for case, label in (("existing", "message in a conversation"), ("new", "new conversation")):
            added = [x - base for x in samples[case]]
            p50, p99 = median(added), percentile(added, 99)
            measured = f"p50 {fmt(p50)} / p99 {fmt(p99)} ms ({len(added)} turns)"
            if store == "local folder" and case == "existing":  # issue 14: one conversation alone
                result["rows"].append(report.check(
                    f"one conversation alone ({store}): added time to first token, p50", p50, LIMIT_MS, unit="ms",
                    measured=measured))
            else:
                result["rows"].append(report.check(
                    f"{store}, {label}: added time to first token, p50", p50, REFERENCE_MS, unit="ms",
                    measured=measured, reference="LiteLLM proxy ≈ 3 ms per request"))
            rows.append([store, label, len(added), f"{fmt(base, 2)}", f"{fmt(median(samples[case]))} / "
                         f"{fmt(percentile(samples[case], 99))}", f"{fmt(p50)} / {fmt(p99)}"])
    label = f"{conversations} conversations started at the same instant (local folder)"
    p50, p99 = median(crowd["first"]), percentile(crowd["first"], 99)
    measured = (f"p50 {fmt(p50, 0)} / p99 {fmt(p99, 0)} ms ({len(crowd['first'])} of {crowd['turns']} turns; "
                f"daphne {fmt(crowd['cpu_ms'], 2)} ms CPU per turn)")
    result["rows"].append(report.check(f"{label}: time to first token, p50", p50, AT_ONCE_P50_MS, unit="ms",
                                       digits=0, measured=measured))
    result["rows"].append(report.check(f"{label}: time to first token, p99", p99, AT_ONCE_P99_MS, unit="ms",
                                       digits=0, measured=f"p99 {fmt(p99, 0)} ms"))
    result["tables"].append({
        "title": "Milliseconds; 'added' = through the server − the model's own median first-token time",
        "headers": ["store", "turn", "samples", "model's own p50", "through the server p50 / p99", "added p50 / p99"],
        "rows": rows})
    result["notes"] += [
        "Issue 14 sets the limit for one conversation alone (a message in an existing conversation, the local "
        "folder store): ≤ 5 ms added before the first token (p50 checked, p99 shown). The other cases are compared "
        "with the field notes' gateway figure (LiteLLM proxy adds about 3 ms per request), a figure to beat, not a "
        "target. 200 conversations started in the same second: §1. Started at the same instant (above): each "
        f"round, {conversations} tabs of as many users send their message together; a reply is {AT_ONCE_TOKENS} "
        "tokens, so its end (storing it, freeing the conversation) falls inside the burst too, and the CPU per turn "
        "covers the whole turn. The issue's limits for 200 conversations in one second (p50 ≤ 300 ms, p99 ≤ 1 s) "
        "are applied to this harsher case.",
        "A turn stores the user message (a read and a conditional write of the transcript), claims the "
        "conversation in the database and opens the model stream before the first token can arrive; a new "
        "conversation creates the transcript and its row instead.",
    ]
    return result
