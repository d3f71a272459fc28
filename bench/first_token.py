"""3. Time to first token: from `message.send` to the first `reply.delta`, minus the model's own.

The model's own first-token time is measured in the same run by the same client reading
the scripted model directly (request sent → first content chunk), interleaved with the
turns through the server. Measured with the local folder store and with S3 (moto on
loopback, in a process of its own), for a message in an existing conversation and for a
message that starts a new one (which also creates the transcript).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bench import report
from bench.clients import direct_stream
from bench.servers import FAKE_MODEL, ModelServer, MotoServer, daphne, seed, server_env
from bench.stats import fmt, median, percentile
from chat.client.tab import Tab

PROMPT = "First token, please. #tokens=20"
LIMIT_MS = 5.0  # issue 14: one conversation alone, added before the first token
REFERENCE_MS = 3.0  # LiteLLM proxy's added latency per request (field notes)
TURNS = {"quick": 5, "full": 25}


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


def run(mode: str, workdir: Path) -> dict:
    result = report.section("first_token", "3. Time to first token")
    turns = TURNS[mode]
    model = ModelServer(workdir, "model-server").start()
    moto = None
    try:
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
    result["tables"].append({
        "title": "Milliseconds; 'added' = through the server − the model's own median first-token time",
        "headers": ["store", "turn", "samples", "model's own p50", "through the server p50 / p99", "added p50 / p99"],
        "rows": rows})
    result["notes"] += [
        "Issue 14 sets the limit for one conversation alone (a message in an existing conversation, the local "
        "folder store): ≤ 5 ms added before the first token (p50 checked, p99 shown). The other cases are compared "
        "with the field notes' gateway figure (LiteLLM proxy adds about 3 ms per request), a figure to beat, not a "
        "target. 200 conversations started in the same second: §1.",
        "A turn stores the user message (a read and a conditional write of the transcript), claims the "
        "conversation in the database and opens the model stream before the first token can arrive; a new "
        "conversation creates the transcript and its row instead.",
    ]
    return result
