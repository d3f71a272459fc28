"""Markdown rendering: GFM conformance, streamed == final, cost per token, hostile input.

Run: `python -m bench.rendering` (needs the GFM spec, see bench/gfm_spec.py). Prints a
Markdown report; docs/rendering.md and docs/benchmarks.md quote it.

- Conformance: each spec example (sections models write) rendered by render_markdown()
  and compared with the spec's HTML by structure and text (tests/html_structure.py).
- Streamed == final: each example fed to a StreamRenderer in random 1–4 character
  pieces; the appends plus the last tail must have the structure of the final HTML.
- Cost per token: StreamRenderer.feed + the reply.delta frame, one token per delta
  (bench/costs.py's measurement), and bytes sent per byte of final HTML.
- Hostile input: 16,000-character replies of pathological Markdown, rendered at once
  and streamed token by token; the longest single call is what blocks the event loop.

Times are the thread's CPU time (time.thread_time): on a shared machine, wall-clock
times of microsecond calls mostly measure the other processes.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from collections import Counter

import bench.django_ready  # noqa: F401  (sets Django up before chat imports its models)
from bench import gfm_spec
from chat import events, protocol
from chat.rendering import StreamRenderer, render_markdown
from tests.fake_model_server import markdown_tokens
from tests.html_structure import structure

HOSTILE_CHARS = 16_000


def hostile_inputs(n: int = HOSTILE_CHARS) -> dict[str, str]:
    """Markdown that makes naive parsers quadratic, each about n characters."""
    return {
        "unbalanced [": "[" * n,
        "[a]( repeated": "[a](" * (n // 4),
        "nested [[[x]]]": ("[" * 50 + "x" + "]" * 50 + " ") * (n // 102),
        "deep > nesting": ">" * n,
        "deep list nesting": "".join("  " * i + "- x\n" for i in range(n // 200)) * 4,
        "long * runs": ("*a " * (n // 6)) + ("a* " * (n // 6)),
        "emphasis _a_b": "_a" * (n // 2),
        "many backticks": "`" * n,
        "backtick runs": "".join("`" * (i % 40 + 1) + "x" for i in range(n // 21)),
        "table, 1000 columns": "|" + "a|" * 1000 + "\n|" + "-|" * 1000 + "\n" + ("|" + "x|" * 1000 + "\n") * 5,
        "link refs": "".join(f"[l{i}]: https://e.com/{i}\n" for i in range(n // 30)) + "[l1] " * 100,
        "math $ runs": "$x$ " * (n // 4),
        "math nesting": "$" + "{" * 3000 + "x" + "}" * 3000 + "$",
        "html-like <": "<a " * (n // 3),
    }


def tokens_of(text: str) -> list[str]:
    """Split like a tokenizer: a few characters at a time."""
    rng = random.Random(1)
    out, i = [], 0
    while i < len(text):
        k = rng.randint(2, 6)
        out.append(text[i:i + k])
        i += k
    return out


def conformance(examples) -> tuple[Counter, Counter, list]:
    passed, total, failures = Counter(), Counter(), []
    for ex in examples:
        total[ex.group] += 1
        if structure(render_markdown(ex.markdown)) == structure(ex.html):
            passed[ex.group] += 1
        else:
            failures.append(ex)
    return passed, total, failures


def streamed(text: str, seed: int) -> str:
    rng = random.Random(seed)
    renderer = StreamRenderer(keep_text=False)
    shown, tail, i = [], "", 0
    while i < len(text):
        k = rng.randint(1, 4)
        out = renderer.feed(text[i:i + k])
        shown.append(out["append"])
        tail = out["tail"]
        i += k
    return "".join(shown) + tail


def streamed_equals_final(examples, seeds=(1, 2, 3)) -> tuple[int, int, list]:
    same, total, failures = 0, 0, []
    for ex in examples:
        final = structure(render_markdown(ex.markdown))
        for seed in seeds:
            total += 1
            if structure(streamed(ex.markdown, seed)) == final:
                same += 1
            else:
                failures.append((ex, seed))
    return same, total, failures


def per_token(style: str, count: int) -> dict:
    tokens = markdown_tokens(count, style)
    renderer = StreamRenderer(keep_text=False)
    times, sent, html_sent = [], 0, 0
    for seq, token in enumerate(tokens):
        started = time.thread_time_ns()
        html = renderer.feed(token)
        text = events.encode(protocol.reply_delta("c" * 32, "m" * 16, seq, token, html))
        times.append((time.thread_time_ns() - started) / 1000)
        sent += len(text.encode())
        html_sent += len(html["append"].encode()) + len(html["tail"].encode())
    final = len(render_markdown("".join(tokens)).encode())
    return {"median": statistics.median(times), "mean": statistics.fmean(times), "max": max(times),
            "sent": sent / final, "html": html_sent / final}


def hostile(text: str) -> dict:
    started = time.thread_time()
    render_markdown(text)
    whole = (time.thread_time() - started) * 1000
    renderer = StreamRenderer(keep_text=False)
    longest = 0.0
    started = time.thread_time()
    for token in tokens_of(text):
        t = time.thread_time()
        renderer.feed(token)
        longest = max(longest, time.thread_time() - t)
    total = (time.thread_time() - started) * 1000
    return {"whole": whole, "stream": total, "longest_feed": longest * 1000}


def main() -> None:
    examples = gfm_spec.examples()
    print("## GFM spec conformance\n")
    passed, total, failures = conformance(examples)
    print("| section | examples | as the spec |\n|---|---|---|")
    for group in gfm_spec.SECTIONS:
        if total[group]:
            print(f"| {group} | {total[group]} | {passed[group] / total[group]:.0%} |")
    print(f"| **all** | {sum(total.values())} | **{sum(passed.values()) / sum(total.values()):.1%}** |")
    if "-v" in sys.argv:
        for ex in failures:
            print(f"\n- example {ex.number} ({ex.group}): {ex.markdown!r}")

    same, count, sfail = streamed_equals_final(examples)
    print(f"\n## Streamed == final\n\n{same}/{count} = **{same / count:.1%}** "
          f"(each example fed in random 1–4 character pieces, 3 seeds)")
    if "-v" in sys.argv:
        for ex, seed in sfail[:40]:
            print(f"- example {ex.number} seed {seed}: {ex.markdown!r}")

    print("\n## Render + frame per token (one token per delta, 5,000 tokens)\n")
    print("| reply | µs median | µs mean | max µs | bytes sent ÷ final HTML | HTML bytes (append + tail) ÷ final |")
    print("|---|---|---|---|---|---|")
    for style, label in (("mixed", "mixed Markdown"), ("para", "one long paragraph"), ("code", "one long code listing")):
        per_token(style, 500)  # warm-up
        m = per_token(style, 5000)
        print(f"| {label} | {m['median']:.1f} | {m['mean']:.1f} | {m['max']:.0f} | {m['sent']:.1f}× | {m['html']:.1f}× |")

    print(f"\n## Hostile input ({HOSTILE_CHARS:,} characters)\n")
    print("| input | render at once, ms | streamed in 2–6 char tokens, total ms | longest feed(), ms |")
    print("|---|---|---|---|")
    for name, text in hostile_inputs().items():
        h = hostile(text)
        print(f"| {name} | {h['whole']:.1f} | {h['stream']:.0f} | {h['longest_feed']:.2f} |")


if __name__ == "__main__":
    main()
