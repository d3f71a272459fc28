"""2. Per-token server cost: CPU per relayed token and bytes per reply, for short and long replies.

Two measurements. In this process: the work the reply task does per delta (the
streaming renderer, then building and encoding the `reply.delta` frame), one token
per delta, for Markdown of several shapes. Through a real daphne: the process's own
CPU time (/proc/<pid>/stat) over one reply streamed to one tab, divided by its tokens,
and the bytes of the `reply.delta` frames that tab received against the size of the
final HTML. "Flat" means a token of a 5,000-token reply costs no more than one of a
1,000-token reply (the renderer's work per delta is bounded by a constant).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import bench.django_ready  # noqa: F401  (sets Django up before chat imports its models)
from bench import model_read, report
from bench.servers import CpuMeter, ModelServer, daphne, seed, server_env
from bench.stats import fmt, percentile
from chat import events, protocol
from chat.client.tab import Tab
from chat.rendering import StreamRenderer, render_markdown
from tests.fake_model_server import markdown_tokens

LENGTHS = (100, 1000, 5000)
STYLES = {
    "mixed": "mixed Markdown",
    "para": "one long paragraph",
    "code": "one long code listing",
    "words": "words, no sentence end",
}
FLAT_ALLOWED = 1.25
SERVER_DELAY = 0.005  # 200 tokens/s: fast enough to be short, slow enough that deltas are not coalesced
LIMIT_US = 100.0  # issue 14: server CPU per relayed token, one tab
WIRE_LIMIT = 15.0  # issue 13: bytes on the wire per byte of final HTML
REFERENCE_US = 37.0  # tenstorrent/tt-inference-server PR #1961 (field notes)
RERENDER_MS_PER_KB = 0.7  # marked + DOMPurify re-render per flush (cymoo/lovia#110, field notes)


def tokens_of(style: str, count: int) -> list[str]:
    if style == "words":
        return [f"w{i}" if i == 0 else f" w{i}" for i in range(count)]
    return markdown_tokens(count, style)


def in_process(style: str, count: int) -> dict:
    """Renderer + frame per token, one token per delta (the worst case: no coalescing)."""
    tokens = tokens_of(style, count)
    renderer = StreamRenderer()
    per_token, sent = [], 0
    cpu_start = time.process_time()
    for seq, token in enumerate(tokens):
        started = time.perf_counter_ns()
        html = renderer.feed(token)
        text = events.encode(protocol.reply_delta("c" * 32, "m" * 16, seq, token, html))
        per_token.append((time.perf_counter_ns() - started) / 1000)
        sent += len(text.encode())
    cpu = time.process_time() - cpu_start
    final = render_markdown("".join(tokens))
    return {"mean": cpu / count * 1e6, "p99": percentile(per_token, 99), "max": max(per_token),
            "sent": sent, "final": len(final.encode()), "chars": len("".join(tokens))}


async def through_server(workdir: Path, lengths: tuple[int, ...], *, compression: bool = True) -> list[dict]:
    model = ModelServer(workdir, "model-server").start()
    server = None
    try:
        env = server_env(workdir, model.url, CHAT_WEBSOCKET_COMPRESSION="1" if compression else "0")
        server = daphne(env, workdir, "daphne-costs" + ("" if compression else "-plain"))
        users = seed(server, {"groups": [{"prefix": "cost", "users": 1, "conversations": len(lengths) + 1}]})
        user = users["groups"][0][0]
        tab = Tab(server.ws_url, token=user["token"], count_bytes=True)
        await tab.connect()
        out = []
        try:
            # A short warm-up reply: imports, the model client, the first store write.
            await tab.turn(user["conversations"][-1], "warm up #tokens=20 #markdown")
            for count, conversation in zip(lengths, user["conversations"]):
                content = f"cost #tokens={count} #delay={SERVER_DELAY} #markdown"
                with CpuMeter({"daphne": server.process.pid}) as meter:
                    _, reply = await tab.turn(conversation, content, timeout=count * SERVER_DELAY * 10 + 60)
                    await asyncio.sleep(0.3)  # the reply's store write and release are part of its cost
                final = reply.final["message"]["html"] if reply.final else ""
                out.append({"tokens": count, "cpu": meter.used["daphne"], "deltas": len(reply.deltas),
                            "sent": reply.delta_bytes, "wire": reply.delta_wire_bytes, "final": len(final.encode()),
                            "completed": bool(reply.final) and reply.final["type"] == "reply.completed",
                            "text_ok": "".join(text for _, text in reply.deltas) == reply.final["message"]["content"]})
        finally:
            await tab.close()
        return out
    finally:
        if server is not None:
            server.stop()
        model.stop()


def run(mode: str, workdir: Path) -> dict:
    result = report.section("costs", "2. Per-token server cost")
    local = {(style, n): in_process(style, n) for style in STYLES for n in LENGTHS}
    rows = []
    for style, label in STYLES.items():
        small, mid, large = (local[(style, n)] for n in LENGTHS)
        result["rows"].append(report.flat(
            f"render + frame per token, {label}: 1,000 → 5,000 tokens", mid["mean"], large["mean"], unit="µs",
            allowed=FLAT_ALLOWED))
        ratios = [local[(style, n)]["sent"] / local[(style, n)]["final"] for n in LENGTHS]
        result["rows"].append(report.flat(
            f"bytes sent ÷ final HTML, {label}: 1,000 → 5,000 tokens", ratios[1], ratios[2], unit="×",
            allowed=FLAT_ALLOWED))
        for n in LENGTHS:
            m = local[(style, n)]
            rows.append([label, f"{n:,}", fmt(m["mean"]), fmt(m["p99"]), fmt(m["max"]), f"{m['sent']:,}",
                         f"{m['final']:,}", fmt(m["sent"] / m["final"], 1), fmt((n + 1) / 2, 0),
                         fmt(RERENDER_MS_PER_KB * m["final"] / 1024 * 1000 / 2, 0)])
    result["tables"].append({
        "title": "In process: StreamRenderer.feed + reply_delta + encode, one token per delta",
        "headers": ["reply", "tokens", "µs/token mean", "p99", "max", "bytes sent", "final HTML bytes",
                    "sent ÷ final", "whole-reply frames ÷ final (≈ (N+1)/2)", "full re-render per token, µs (0.7 ms/KB, avg)"],
        "rows": rows})

    read_tokens, read_rounds = (1000, 5) if mode == "full" else (300, 3)
    read = model_read.measure(workdir / "read", read_tokens, read_rounds)
    result["rows"].append(report.info(
        "reading the model's stream, CPU per token: through httpx2 → off the connection (chunked_body)",
        f"{fmt(read['httpx2_median'], 0)} → {fmt(read['direct_median'], 0)} µs "
        f"({fmt(read['direct_median'] / read['httpx2_median'], 2)}×)"))
    if not read["direct_taken"]:
        result["rows"].append(report.failed("the model's chunked stream is read off the connection",
                                            "the backend read it through httpx2"))
    result["tables"].append({
        "title": "Reading the model's stream in one process, alternately both ways (CPU µs per token, one token per "
                 f"read, {read_rounds} replies of {read_tokens:,} tokens each way)",
        "headers": ["way", "each reply, in order", "median"],
        "rows": [["through httpx2 and httpcore2 (any other body)", " / ".join(fmt(x, 0) for x in read["httpx2"]),
                  fmt(read["httpx2_median"], 0)],
                 ["off the connection (chat/backends/chunked_body.py)", " / ".join(fmt(x, 0) for x in read["direct"]),
                  fmt(read["direct_median"], 0)]]})

    lengths = LENGTHS if mode == "full" else LENGTHS[:2]
    (workdir / "plain").mkdir(exist_ok=True)
    plain = asyncio.run(through_server(workdir / "plain", lengths, compression=False))
    served = asyncio.run(through_server(workdir, lengths))
    by_n = {s["tokens"]: s for s in served}
    srows = []
    for label, runs in (("on", served), ("off", plain)):
        for s in runs:
            s["us"] = s["cpu"] / s["tokens"] * 1e6
            srows.append([label, f"{s['tokens']:,}", fmt(s["us"], 0), f"{s['deltas']:,}",
                          fmt(s["tokens"] / max(1, s["deltas"]), 2), f"{s['sent']:,}", f"{s['wire']:,}", f"{s['final']:,}",
                          fmt(s["sent"] / max(1, s["final"]), 1), fmt(s["wire"] / max(1, s["final"]), 1),
                          "yes" if s["completed"] and s["text_ok"] else "NO"])
    longest_plain = plain[-1]
    result["rows"].append(report.check(
        f"bytes on the wire ÷ final HTML ({longest_plain['tokens']:,} tokens, 1 tab), compression off",
        longest_plain["wire"] / longest_plain["final"], WIRE_LIMIT, unit="×"))
    result["rows"].append(report.check(
        f"bytes on the wire ÷ final HTML ({served[-1]['tokens']:,} tokens, 1 tab), permessage-deflate",
        served[-1]["wire"] / served[-1]["final"], WIRE_LIMIT, unit="×"))
    if 1000 in by_n and 5000 in by_n:
        result["rows"].append(report.flat("daphne CPU per relayed token (1 tab): 1,000 → 5,000 tokens",
                                          by_n[1000]["us"], by_n[5000]["us"], unit="µs", digits=0, allowed=FLAT_ALLOWED))
        result["rows"].append(report.flat("bytes on the wire ÷ final HTML (1 tab): 1,000 → 5,000 tokens",
                                          by_n[1000]["wire"] / by_n[1000]["final"], by_n[5000]["wire"] / by_n[5000]["final"],
                                          unit="×", allowed=FLAT_ALLOWED))
    else:
        result["rows"].append(report.flat("daphne CPU per relayed token (1 tab): 100 → 1,000 tokens",
                                          by_n[100]["us"], by_n[1000]["us"], unit="µs", digits=0, allowed=FLAT_ALLOWED))
    longest = served[-1]
    result["rows"].append(report.info(
        f"daphne CPU per relayed token ({longest['tokens']:,} tokens, 1 tab): compression off → on",
        f"{fmt(longest_plain['us'], 0)} → {fmt(longest['us'], 0)} µs"))
    result["rows"].append(report.check(
        f"daphne CPU per relayed token ({longest['tokens']:,} tokens, 1 tab)", longest["us"], LIMIT_US, unit="µs",
        digits=0))
    result["rows"].append(report.check(
        f"daphne CPU per relayed token ({longest['tokens']:,} tokens, 1 tab)", longest["us"], REFERENCE_US, unit="µs",
        digits=0, reference="a Python streaming server, tt-inference-server #1961"))
    if not all(s["completed"] and s["text_ok"] for s in served):
        result["rows"].append(report.failed("every reply complete and its deltas add up to its text",
                                            "a reply failed or its deltas differ from the stored text"))
    result["tables"].append({
        "title": f"Through daphne: one tab, mixed Markdown at {SERVER_DELAY * 1000:.0f} ms/token (CPU from /proc, "
                 "including the reply's start and store)",
        "headers": ["compression", "tokens", "daphne CPU µs/token", "deltas", "tokens per delta", "reply.delta JSON bytes",
                    "on the wire", "final HTML bytes", "JSON ÷ final", "wire ÷ final", "complete, text matches"],
        "rows": srows})
    result["notes"] += [
        "Flat: the per-token figure at 5,000 tokens may be at most "
        f"{FLAT_ALLOWED:.2f}× the one at 1,000 tokens (the 100-token row shows the start-up share).",
        "'sent ÷ final' is the bytes of every reply.delta frame (JSON, delta text and the HTML append/tail) over "
        "the bytes of the final HTML: constant in the reply's length means O(N) bytes. A relay that re-sends the "
        "whole reply in every frame (open-webui#23733) would send about (N+1)/2 times the final size.",
        "'on the wire' counts each reply.delta message as the tab received it: frame header plus payload, "
        "compressed when permessage-deflate was negotiated (config/compression.py; the tab offers it as browsers "
        "do). Compression 'off' is the same server with CHAT_WEBSOCKET_COMPRESSION=0, in the same run.",
        "The last column is what re-rendering the whole reply on every flush would cost at the field notes' "
        "0.7 ms per KB, averaged over the reply.",
    ]
    if mode == "quick":
        result["notes"].append("Quick mode streams 100 and 1,000 tokens through daphne (5,000 in the full run).")
    return result
