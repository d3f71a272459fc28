"""Results of a run: rows checked against their limits, the console table, docs/benchmarks.md.

A section's result is a plain dict (it crosses a process boundary as JSON):
`{"key", "title", "rows", "tables", "notes", "charts", "seconds", "error"}`. A row
says what was measured, its limit and whether the limit held. Limits come in two
kinds: the issue's targets (`pass` / `miss`) and the field notes' figures to beat
(`beats` / `behind`); `info` rows have no limit.
"""
from __future__ import annotations

import html
import math
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.stats import fmt

PASS, MISS, BEATS, BEHIND, INFO, ERROR = "pass", "miss", "beats", "behind", "info", "error"


def section(key: str, title: str) -> dict:
    return {"key": key, "title": title, "rows": [], "tables": [], "notes": [], "charts": [], "seconds": None,
            "error": None}


def check(figure: str, value: float | None, limit: float, *, unit: str, digits: int = 1,
          higher_is_better: bool = False, measured: str | None = None, reference: str | None = None) -> dict:
    """A row comparing `value` with `limit`. `reference` names a field-notes figure (not a target)."""
    sign = "≥" if higher_is_better else "<"
    row = {"figure": figure, "measured": measured or fmt(value, digits, unit),
           "limit": f"{sign} {fmt(limit, digits, unit)}" + (f" ({reference})" if reference else ""),
           "kind": "reference" if reference else "target", "note": ""}
    if value is None or (isinstance(value, float) and math.isnan(value)):
        row["verdict"] = ERROR
        row["note"] = "no measurement"
        return row
    held = value >= limit if higher_is_better else value < limit
    if reference:
        row["verdict"] = BEATS if held else BEHIND
    else:
        row["verdict"] = PASS if held else MISS
    if not held:
        gap = (limit - value) if higher_is_better else (value - limit)
        word = "short by" if higher_is_better else "over by"
        ratio = (value / limit) if limit else math.inf
        amount = f"{fmt(gap, digits)} percentage points" if unit == "%" else fmt(gap, digits, unit)
        row["note"] = f"{word} {amount} ({ratio:.2f}× the limit)"
    return row


def flat(figure: str, small: float, large: float, *, unit: str, digits: int = 1, allowed: float = 1.5,
         what: str = "") -> dict:
    """A row for "must stay flat": the large case may cost at most `allowed` times the small one."""
    ratio = large / small if small else math.nan
    row = {"figure": figure, "measured": f"{fmt(small, digits, unit)} → {fmt(large, digits, unit)} ({ratio:.2f}×)",
           "limit": f"flat: ≤ {allowed:.2f}× {what}".rstrip(), "kind": "target", "note": ""}
    if math.isnan(ratio):
        row["verdict"], row["note"] = ERROR, "no measurement"
    elif ratio <= allowed:
        row["verdict"] = PASS
    else:
        row["verdict"] = MISS
        row["note"] = f"grows {ratio:.2f}× (limit {allowed:.2f}×)"
    return row


def equal(figure: str, counts: dict[str, int | None]) -> dict:
    """A row for "must be constant": every case must give the same count."""
    shown = ", ".join(f"{name}: {value if value is not None else '—'}" for name, value in counts.items())
    values = set(counts.values())
    row = {"figure": figure, "measured": shown, "limit": "constant", "kind": "target", "note": ""}
    if None in values:
        row["verdict"], row["note"] = ERROR, "no measurement"
    elif len(values) == 1:
        row["verdict"] = PASS
    else:
        row["verdict"] = MISS
        row["note"] = f"varies from {min(values)} to {max(values)}"
    return row


def info(figure: str, measured: str, limit: str = "—") -> dict:
    return {"figure": figure, "measured": measured, "limit": limit, "verdict": INFO, "kind": "info", "note": ""}


def failed(figure: str, reason: str) -> dict:
    return {"figure": figure, "measured": "—", "limit": "—", "verdict": ERROR, "kind": "target", "note": reason}


# --- console ---------------------------------------------------------------------


def console_rows(result: dict) -> str:
    """The section's rows as an aligned text table."""
    lines = [f"== {result['title']} ({fmt(result.get('seconds'), 0, 's')}{load_text(result)})"]
    if result.get("error"):
        lines.append(f"   ERROR: {result['error']}")
    rows = [(r["figure"], r["measured"], r["limit"], r["verdict"] + (f" ({r['note']})" if r["note"] else ""))
            for r in result["rows"]]
    if rows:
        widths = [min(60, max(len(row[i]) for row in rows)) for i in range(3)]
        for row in rows:
            lines.append("   " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return "\n".join(lines)


def load_text(result: dict) -> str:
    load = result.get("load")
    if not load:
        return ""
    return (f"; CPUs busy {load['busy']:.2f}: this benchmark {load['bench']:.2f}, "
            f"other processes {load['other']:.2f}")


# --- machine ---------------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = "?"
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {"nproc": nproc, "cpu": cpu, "memory": memory, "python": platform.python_version(),
            "kernel": platform.release()}


# --- docs/benchmarks.md ----------------------------------------------------------


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def _verdict(row: dict) -> str:
    return {PASS: "pass", MISS: "**miss**", BEATS: "beats", BEHIND: "behind", INFO: "—", ERROR: "**error**"}[row["verdict"]]


def before_figures(path: Path) -> dict[str, str]:
    """figure → what an earlier run measured, from the JSON it wrote next to its report."""
    import json

    data = json.loads(path.read_text())
    return {row["figure"]: f"{row['measured']} ({_verdict(row)})" for result in data["results"] for row in result["rows"]}


def write_markdown(path: Path, results: list[dict], *, mode: str, started: datetime, seconds: float,
                   config: list[str], charts_dir: Path, before: dict[str, str] | None = None,
                   before_label: str = "") -> None:
    """The report; with `before` (an earlier run's figures), the summary shows them next to this run's."""
    box = machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `python3 -m bench" + (" --quick" if mode == "quick" else "") + "` (overwritten every run; "
        "`make bench` for the full run, `make bench-quick` for the quick one). Every figure is measured "
        "side by side with its limit in the same run.",
        "",
        f"- Date: {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {box['nproc']} CPUs ({box['cpu']}), {box['memory']} RAM, Linux {box['kernel']}, "
        f"Python {box['python']}",
        f"- Mode: {mode}; the run took {seconds:.0f} s",
    ]
    lines += [f"- {item}" for item in config]
    lines += ["", "## Summary", ""]
    summary_rows = []
    for result in results:
        for row in result["rows"]:
            cells = [result["title"].split(".")[0] if result["title"][0].isdigit() else result["title"],
                     row["figure"]]
            if before is not None:
                cells.append(before.get(row["figure"], "—"))
            summary_rows.append(cells + [row["measured"], row["limit"], _verdict(row)])
        if result.get("error"):
            summary_rows.append([result["title"], "section failed"] + ["—"] * (before is not None)
                                + ["—", "—", "**error**"])
    headers = ["§", "figure", "measured", "limit", "verdict"]
    if before is not None:
        lines += ["", f"'before' is {before_label}: the same figure from that run, with its verdict.", ""]
        headers = ["§", "figure", "before", "after (this run)", "limit", "verdict"]
    lines += _md_table(headers, summary_rows)

    misses = [(r, row) for r in results for row in r["rows"] if row["verdict"] in (MISS, ERROR)]
    behind = [(r, row) for r in results for row in r["rows"] if row["verdict"] == BEHIND]
    lines += ["", "## Missed targets", ""]
    if not misses and not any(r.get("error") for r in results):
        lines.append("None: every target of the issue held in this run.")
    for result, row in misses:
        lines.append(f"- {result['title']} — {row['figure']}: {row['measured']} against {row['limit']}: "
                     f"{row['note'] or row['verdict']}.")
    for result in results:
        if result.get("error"):
            lines.append(f"- {result['title']}: the section failed: {result['error']}")
    if behind:
        lines += ["", "Behind a figure to beat from the field notes (not a target of the issue):", ""]
        for result, row in behind:
            lines.append(f"- {result['title']} — {row['figure']}: {row['measured']} against {row['limit']}: {row['note']}.")

    for result in results:
        lines += ["", f"## {result['title']}", ""]
        if result.get("seconds") is not None:
            lines.append(f"_Section time: {result['seconds']:.0f} s{load_text(result)} (average cores)._")
            lines.append("")
        if result.get("error"):
            lines += [f"**The section failed:** {result['error']}", ""]
        if result["rows"]:
            lines += _md_table(["figure", "measured", "limit", "verdict", "note"],
                               [[r["figure"], r["measured"], r["limit"], _verdict(r), r["note"]] for r in result["rows"]])
            lines.append("")
        for table in result["tables"]:
            if table.get("title"):
                lines += [f"**{table['title']}**", ""]
            lines += _md_table(table["headers"], table["rows"])
            lines.append("")
        for chart in result.get("charts", []):
            name = f"benchmarks-{chart['name']}.svg"
            write_svg(charts_dir / name, chart)
            lines += [f"![{chart['title']}]({name})", ""]
        for note in result["notes"]:
            lines.append(f"- {note}")
    path.write_text("\n".join(lines).rstrip() + "\n")


# --- SVG bar chart (no plotting library is installed) ------------------------------


def write_svg(path: Path, chart: dict) -> None:
    """Grouped horizontal bars: one group per category, one bar per series, a limit line."""
    categories, series = chart["categories"], chart["series"]
    colours = ["#4c78a8", "#f58518", "#54a24b", "#b279a2"]
    values = [v for s in series for v in s["values"] if v is not None and not math.isnan(v)]
    top = max(values + [chart.get("limit") or 0] + [1e-9]) * 1.1
    positive = [v for v in values if v > 0]
    # A logarithmic axis when the values span more than two decades (1 ms next to 10 s).
    low = min(positive) / 2 if positive and top / min(positive) > 100 else None

    def bar_width(value: float) -> float:
        if low is None:
            return plot_w * value / top
        return plot_w * math.log10(max(value, low) / low) / math.log10(top / low)
    label_w = max(120, 7 * max((len(c) for c in categories), default=10) + 20)
    bar_h, gap, plot_w = 14, 12, 460
    group_h = bar_h * len(series) + gap
    height = 60 + group_h * len(categories) + 45
    width = label_w + plot_w + 120
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{html.escape(chart["title"])}</text>']
    for i, s in enumerate(series):
        x = label_w + i * 140
        out.append(f'<rect x="{x}" y="30" width="12" height="12" fill="{colours[i % len(colours)]}"/>')
        out.append(f'<text x="{x + 16}" y="41">{html.escape(s["label"])}</text>')
    y = 55
    for c, category in enumerate(categories):
        out.append(f'<text x="{label_w - 8}" y="{y + group_h / 2}" text-anchor="end">{html.escape(category)}</text>')
        for i, s in enumerate(series):
            value = s["values"][c]
            if value is None or math.isnan(value):
                continue
            w = max(1.0, bar_width(value))
            out.append(f'<rect x="{label_w}" y="{y + i * bar_h}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'fill="{colours[i % len(colours)]}"/>')
            out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + i * bar_h + bar_h - 4}">'
                       f'{value:,.{chart.get("digits", 1)}f} {html.escape(chart.get("unit", ""))}</text>')
        y += group_h
    if chart.get("limit"):
        x = label_w + bar_width(chart["limit"])
        out.append(f'<line x1="{x:.1f}" y1="50" x2="{x:.1f}" y2="{y}" stroke="#d62728" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 16}" fill="#d62728" text-anchor="middle">'
                   f'{html.escape(chart.get("limit_label", "limit"))}</text>')
    if low is not None:
        out.append(f'<text x="{label_w}" y="{y + 30}" fill="#555">logarithmic scale</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
