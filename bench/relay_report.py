"""§1's rows (each scenario next to the issue's target), its table, chart and notes."""
from __future__ import annotations

from bench import report
from bench.load import CLIENT_PROCESSES
from bench.relay import STAGGER, Outcome
from bench.relay_plan import CPU_RATIO_ALLOWED, FIRST_TOKEN_P50_MS, FIRST_TOKEN_P99_MS, RATE_LIMIT_PCT, SERVER_KINDS
from bench.stats import fmt


def _rows(o: Outcome, m: dict, by_key: dict) -> list[dict]:
    s = o.scenario
    rows = []
    latency = f"p50 {fmt(m['added_p50'], 2)} / p99 {fmt(m['added_p99'], 2)} ms ({m['samples']:,} tokens)"
    if s.limit_ms is not None:
        rows.append(report.check(f"{s.label}: added latency per token", m["added_p99"], s.limit_ms, unit="ms",
                                 measured=latency))
    else:
        rows.append(report.info(f"{s.label}: added latency per token (reference, no target)", latency))
    if s.rate_check:
        rows.append(report.check(
            f"{s.label}: delivered tokens/s vs direct", m["ratio"], RATE_LIMIT_PCT, unit="%", higher_is_better=True,
            measured=f"{fmt(m['relay_rate'])} vs {fmt(m['direct_rate'])} tok/s ({fmt(m['ratio'])} %)"))
    if s.first_token:
        first = (f"p50 {fmt(m['first_p50'], 0)} / p99 {fmt(m['first_p99'], 0)} ms ({m['first_samples']} replies; "
                 f"model's own p50 {fmt(m['direct_first_p50'], 1)} ms)")
        rows.append(report.check(f"{s.label}: time to first token, p50", m["first_p50"], FIRST_TOKEN_P50_MS,
                                 unit="ms", digits=0, measured=first))
        rows.append(report.check(f"{s.label}: time to first token, p99", m["first_p99"], FIRST_TOKEN_P99_MS,
                                 unit="ms", digits=0, measured=first))
    reference = by_key.get(s.cpu_reference)
    if reference is not None:
        ref_us = reference[1]["us_per_token"]
        limit = ref_us * CPU_RATIO_ALLOWED
        rows.append(report.check(
            f"{s.label}: server CPU per token delivered", m["us_per_token"], limit, unit="µs", digits=0,
            measured=f"{fmt(m['us_per_token'], 0)} µs vs {fmt(ref_us, 0)} µs on one process "
                     f"({m['us_per_token'] / ref_us:.2f}×)" if ref_us else None)
                    | {"limit": f"≤ {CPU_RATIO_ALLOWED}× {reference[0].scenario.label}"})
    compared = by_key.get(s.processes_reference)
    if compared is not None:
        c = compared[1]
        rows.append(report.info(
            f"{s.label} vs {compared[0].scenario.label}: added p99, first token p50, server CPU",
            f"{fmt(m['added_p99'], 1)} vs {fmt(c['added_p99'], 1)} ms; {fmt(m['first_p50'], 0)} vs "
            f"{fmt(c['first_p50'], 0)} ms; {fmt(m['server_cpu'] * 100, 0)} % vs {fmt(c['server_cpu'] * 100, 0)} % "
            "of a core"))
    lost = m["incomplete"] + m["gapped"]
    problems = (f"{m['incomplete']} of {m['tab_replies']} tab replies incomplete or missing, {m['gapped']} with "
                f"gaps or duplicates in seq, {o.direct_failures} direct reads failed"
                + (f" (first failure: {o.failures[0]})" if o.failures else "")
                + (f"; the servers logged {o.dropped} 'over capacity' drops" if o.dropped else ""))
    if lost or o.failures or o.dropped or o.direct_failures:
        rows.append(report.failed(f"{s.label}: every reply complete, no gap", problems))
    elif s.rate_check:
        rows.append(report.check(f"{s.label}: failed, incomplete or gapped replies", 0, 1, unit="", digits=0,
                                 measured=f"0 of {m['tab_replies']}"))
    return rows


def section(mode: str, outcomes: list[Outcome]) -> dict:
    result = report.section("relay", "1. Relay under load")
    measured = [(o, o.measure()) for o in outcomes]
    by_key = {o.scenario.key: (o, m) for o, m in measured}
    table = []
    chart = {"name": "relay", "title": "Added latency per token (ms): p50 and p99", "unit": "ms", "categories": [],
             "series": [{"label": "p50", "values": []}, {"label": "p99", "values": []}], "limit": 20.0,
             "limit_label": "20 ms: the limit at 200 and 500 conversations"}
    for o, m in measured:
        s = o.scenario
        result["rows"] += _rows(o, m, by_key)
        table.append([
            s.label, SERVER_KINDS[s.server]["what"], fmt(o.seconds, 0), m["tab_replies"], f"{s.tokens} @ {s.rate:g}/s",
            f"{m['samples']:,} / {m['direct_samples']:,}",
            f"{fmt(m['direct_p50'], 2)} / {fmt(m['direct_p99'], 2)}",
            f"{fmt(m['relay_p50'], 2)} / {fmt(m['relay_p99'], 2)}",
            f"{fmt(m['added_p50'], 2)} / {fmt(m['added_p99'], 2)}",
            f"{fmt(m['direct_first_p50'], 1)} / {fmt(m['first_p50'], 0)} / {fmt(m['first_p99'], 0)}",
            f"{fmt(m['direct_rate'])} / {fmt(m['relay_rate'])}", fmt(m["tokens_per_delta"], 2),
            f"{m['incomplete']} / {m['gapped']} / {len(o.failures)}",
            fmt(m["us_per_token"], 0), f"{fmt(m['server_cpu'] * 100, 0)} %", f"{fmt(m['model_cpu'] * 100, 0)} %",
            f"{fmt(m['client_cpu'] * 100, 0)} %"])
        chart["categories"].append(s.label)
        chart["series"][0]["values"].append(m["added_p50"])
        chart["series"][1]["values"].append(m["added_p99"])
    result["tables"].append({
        "title": "Per scenario (latencies in ms; CPU as a share of one core over the scenario)",
        "headers": ["scenario", "server", "seconds", "tab replies", "tokens per reply", "tokens timed: relay / direct",
                    "direct p50 / p99", "through server p50 / p99", "added p50 / p99",
                    "first token: model p50 / server p50 / p99", "tok/s direct / server", "tokens per delta",
                    "incomplete / gapped / failed", "server CPU µs per token delivered", "server CPU",
                    "model server CPU", f"client CPU ({CLIENT_PROCESSES} processes)"],
        "rows": table})
    result["charts"].append(chart)
    result["notes"] += [
        "The model streams Markdown (headings, paragraphs, lists, a table, fenced code) at the scenario's rate; every "
        "word token carries its send time. Latency = arrival at the client − send time at the model, on one clock; "
        "added latency = that − the direct baseline's median (same client processes, same concurrency and "
        f"staggering, read just before). Every scenario's replies start within {STAGGER:g} s.",
        f"Clients: {CLIENT_PROCESSES} processes of their own (bench/load.py), never the server's nor this section's; "
        "'client CPU' is theirs together over the scenario (at 200 % they are the bottleneck, not the server).",
        "First token: message.send → first reply.delta at the sending tab; the model's own is request → first chunk "
        "read directly.",
        "Server CPU per token delivered: the daphne processes' CPU (/proc) over the scenario ÷ (tab replies "
        "completed × tokens per reply); with two tabs per conversation every token is delivered twice.",
        "Delivered rate: stamped tokens per second from the model sending a reply's first token to the last one "
        "arriving at the tab, scaled to all tokens; a backlog flushed late lowers it.",
        "'1 vs 2 processes': the same 200 conversations on config.serve (the Procfile's launcher) with 2 daphne "
        "processes on one port, next to 1 process (in-memory layer) and, in the full run, 1 process with Redis.",
    ]
    if mode == "quick":
        result["notes"].append("Quick mode: smaller counts and 40-token replies (labelled); the 500-conversation and "
                               "1-process-with-Redis scenarios run only in the full run.")
    return result
