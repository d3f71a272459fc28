"""`python3 -m bench [--quick]`: measure every figure next to its limit, write docs/benchmarks.md.

Each section runs in a child process of its own (`python3 -m bench --section NAME`), so
that its Django settings, servers and crashes stay its own, and so that a section over
its time budget can be stopped with everything it started. Each child writes its result
as JSON; this process prints the rows as they come and writes the report at the end.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.servers import migrated_template

REPO = Path(__file__).resolve().parent.parent

# name: (module, time budget in seconds: quick, full). A budget is a hard stop, not a target.
SECTIONS = {
    "relay": ("bench.relay", 110, 480),
    "costs": ("bench.costs", 75, 240),
    "first_token": ("bench.first_token", 75, 200),
    "connections": ("bench.connections", 60, 400),
    "local_model": ("bench.local_model", 45, 120),
    "pages": ("bench.pages", 30, 90),
    "storage_calls": ("bench.storage_calls", 30, 90),
    "profile": ("bench.profile", 150, 180),  # only with --profile
}
DEFAULT = [name for name in SECTIONS if name != "profile"]

CONFIG = [
    "Servers: daphne 4 (one process unless stated; §1 runs it through `python -m config.serve`, the Procfile's launcher), DEBUG=0 (the page benchmark: DEBUG=1, see §6), SQLite, "
    "in-memory channel layer (Redis where stated), the local folder store unless S3 (moto) is stated; the "
    "per-user rate limits are lifted so that the limiter is not what is measured.",
    "The machine may be shared: each section's header gives the average number of busy cores during it, "
    "split into this benchmark's processes and everybody else's; latency figures are only as quiet as that.",
    "Clients never run in a server's process: §1's run in two client processes of their own (bench/load.py), "
    "the other sections' in the section's process (`websockets` for sockets, aiohttp for the direct model reads, "
    "http.client for pages).",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short run (under 2 minutes)")
    parser.add_argument("--only", help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"), help="the report to write")
    parser.add_argument("--keep", action="store_true", help="keep the run's temporary folder (logs, databases)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile daphne in the workloads that miss (needs py-spy: pip install py-spy==0.4.1)")
    parser.add_argument("--before", help="an earlier run's results (the .json written next to its report): its "
                        "figures are shown next to this run's")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other sections of the report's .json (an earlier run) and replace only the "
                        "sections run now, e.g. one that failed (each section's header keeps its own load figures)")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_child(args: argparse.Namespace) -> int:
    """Run one section in this process and write its result as JSON."""
    mode = "quick" if args.quick else "full"
    module = importlib.import_module(SECTIONS[args.section][0])
    started = time.monotonic()
    try:
        result = module.run(mode, Path(args.workdir))
    except Exception:
        traceback.print_exc()
        result = report.section(args.section, args.section)
        result["error"] = traceback.format_exc(limit=3).strip().splitlines()[-1]
    result["seconds"] = time.monotonic() - started
    Path(args.result).write_text(json.dumps(result))
    return 0


def cpu_counters() -> tuple[float, float, float]:
    """(machine busy CPU seconds, machine total CPU seconds, CPU seconds of this process's waited-for children)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (total - idle) / ticks, total / ticks, children.ru_utime + children.ru_stime


def machine_share(before: tuple[float, float, float], after: tuple[float, float, float], wall: float) -> dict:
    """Average cores busy during a section: all of them, this benchmark's, everybody else's."""
    busy = after[0] - before[0]
    ours = after[2] - before[2]
    return {"busy": busy / wall, "bench": ours / wall, "other": max(0.0, busy - ours) / wall,
            "load1": float(Path("/proc/loadavg").read_text().split()[0])}


def run_section(name: str, mode: str, run_dir: Path) -> dict:
    module, quick_budget, full_budget = SECTIONS[name]
    budget = quick_budget if mode == "quick" else full_budget
    workdir = run_dir / name
    workdir.mkdir()
    result_path = workdir / "result.json"
    log_path = workdir / "section.log"
    command = [sys.executable, "-m", "bench", "--section", name, "--workdir", str(workdir), "--result", str(result_path)]
    if mode == "quick":
        command.append("--quick")
    started = time.monotonic()
    counters = cpu_counters()
    with open(log_path, "wb") as log:
        # A session of its own: on timeout the section and the servers it started stop together.
        child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            child.wait(budget)
        except subprocess.TimeoutExpired:
            _stop_group(child)
    load = machine_share(counters, cpu_counters(), time.monotonic() - started)
    if result_path.exists():
        result = json.loads(result_path.read_text())
        result["load"] = load
        return result
    result = report.section(name, name)
    result["load"] = load
    result["seconds"] = time.monotonic() - started
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    reason = f"over its {budget} s budget, stopped" if child.returncode in (-signal.SIGTERM, -signal.SIGKILL) else \
        f"exited with {child.returncode}"
    result["error"] = f"{reason}; last log lines: {' / '.join(tail)}"
    return result


def _stop_group(child: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.section:
        return run_child(args)
    mode = "quick" if args.quick else "full"
    names = [n.strip() for n in args.only.split(",")] if args.only else list(DEFAULT)
    if args.profile and "profile" not in names:
        names.append("profile")
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    started_at = datetime.now(UTC)
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    print(f"bench: {mode} run, sections {', '.join(names)}; working folder {run_dir}", flush=True)
    results = []
    try:
        migrated_template(run_dir)
        for name in names:
            result = run_section(name, mode, run_dir)
            results.append(result)
            print(report.console_rows(result), flush=True)
    finally:
        seconds = time.monotonic() - started
        output = Path(args.output)
        config = CONFIG
        if args.merge and output.with_suffix(".json").exists():
            earlier = json.loads(output.with_suffix(".json").read_text())["results"]
            fresh = {r["key"]: r for r in results}
            kept = [r["title"] for r in earlier if r["key"] not in fresh]
            results = [fresh.pop(r["key"], r) for r in earlier] + list(fresh.values())
            if kept:
                config = [*config, f"Kept from an earlier run of this report (`--merge`): {'; '.join(kept)}. "
                          "Every other section is from this run."]
        output.parent.mkdir(parents=True, exist_ok=True)
        before = report.before_figures(Path(args.before)) if args.before else None
        report.write_markdown(output, results, mode=mode, started=started_at, seconds=seconds, config=config,
                              charts_dir=output.parent, before=before,
                              before_label=f"`{args.before}`" if args.before else "")
        # The raw rows, for a later run's --before (copy it aside before optimising).
        output.with_suffix(".json").write_text(json.dumps(
            {"started": started_at.isoformat(), "mode": mode, "results": results}, indent=1))
        print(f"bench: wrote {output} in {seconds:.0f} s", flush=True)
        if args.keep or any(r.get("error") for r in results):
            print(f"bench: logs kept in {run_dir}", flush=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    misses = sum(1 for r in results for row in r["rows"] if row["verdict"] in (report.MISS, report.ERROR))
    misses += sum(1 for r in results if r.get("error"))  # a section that failed measured nothing
    print(f"bench: {misses} missed target(s)" if misses else "bench: every target held", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
