"""5. The local model: tokens/s of a reply through the whole app vs llama-cpp-python called directly.

Same GGUF file (chat.backends.local_model_path()), same Llama parameters as the app's
backend, same messages (a conversation holding only this prompt), same token cap; the
runs through the app and the direct runs alternate, one at a time, so they never share
the CPUs. Decode rate = (tokens − 1) ÷ (last token's arrival − first token's arrival),
with the tokens of the text counted by the model's own tokenizer in both cases.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench import report
from bench.servers import ModelServer, daphne, seed, server_env
from bench.stats import fmt, median
from chat.client.tab import Tab

PROMPT = ("Write a long, detailed story about a lighthouse keeper who befriends a whale. "
          "Describe the sea, the seasons and the village in many paragraphs.")
MAX_TOKENS = 128
RUNS = {"quick": 4, "full": 10}
LIMIT_PCT = 95.0


def load_direct():
    """A Llama built as chat.backends.LocalBackend.load() builds it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import llama_cpp
    from django.conf import settings

    from chat.backends import LocalBackend, local_model_path

    path = local_model_path()
    if path is None or not path.is_file():
        raise RuntimeError(f"the local model file cannot be found ({path})")
    return llama_cpp.Llama(model_path=str(path), n_ctx=settings.LOCAL_MODEL_CONTEXT,
                           n_threads=settings.LOCAL_MODEL_THREADS or None,
                           last_n_tokens_size=LocalBackend.penalty_window, verbose=False), path


def count_tokens(llm, text: str) -> int:
    return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def rates(llm, started: float, pieces: list[tuple[float, str]]) -> dict:
    text = "".join(piece for _, piece in pieces)
    tokens = count_tokens(llm, text)
    first, last = pieces[0][0], pieces[-1][0]
    return {"tokens": tokens, "decode": (tokens - 1) / (last - first) if last > first else float("nan"),
            "end_to_end": tokens / (last - started), "first_token_ms": (first - started) * 1000}


def direct_run(llm) -> dict:
    messages = [{"role": "user", "content": PROMPT}]
    pieces = []
    started = time.time()
    from chat.backends import LocalBackend

    sampling = LocalBackend().sampling()  # the app's, so both sides write alike
    for chunk in llm.create_chat_completion(messages, stream=True, max_tokens=MAX_TOKENS, **sampling):
        for choice in chunk.get("choices", []):
            text = choice.get("delta", {}).get("content")
            if text:
                pieces.append((time.time(), text))
    return rates(llm, started, pieces)


async def app_run(server, user: dict, conversation: str, llm) -> dict:
    tab = Tab(server.ws_url, token=user["token"])
    await tab.connect()
    try:
        sent, reply = await tab.turn(conversation, PROMPT, timeout=120)
    finally:
        await tab.close()
    if not reply.deltas or reply.final["type"] != "reply.completed":
        raise RuntimeError(f"the reply through the app failed: {reply.final}")
    return rates(llm, sent, reply.deltas)


def run(mode: str, workdir: Path) -> dict:
    from chat.backends import LOCAL_MODEL_ID

    result = report.section("local_model", "5. Local model through the app")
    llm, path = load_direct()
    runs = RUNS[mode]
    model = ModelServer(workdir, "model-server").start()  # unused by these replies; keeps the env complete
    server = None
    app, direct = [], []
    try:
        server = daphne(server_env(workdir, model.url, CHAT_MAX_REPLY_TOKENS=str(MAX_TOKENS)), workdir, "daphne-local")
        user = seed(server, {"model": LOCAL_MODEL_ID,
                             "groups": [{"prefix": "local", "users": 1, "conversations": runs + 1}]})["groups"][0][0]
        conversations = user["conversations"]
        asyncio.run(app_run(server, user, conversations[-1], llm))  # loads the model in daphne
        direct_run(llm)  # and warms this copy
        for i in range(runs):
            app.append(asyncio.run(app_run(server, user, conversations[i], llm)))
            direct.append(direct_run(llm))
    finally:
        if server is not None:
            server.stop()
        model.stop()
        llm.close()
    app_rate, direct_rate = median([r["decode"] for r in app]), median([r["decode"] for r in direct])
    # Each run through the app is compared with the direct run that follows it: load from
    # other processes that comes and goes then weighs on both sides of a pair alike.
    ratio = median([a["decode"] / d["decode"] for a, d in zip(app, direct)]) * 100
    result["rows"].append(report.check(
        "local model: tokens/s through the app vs direct", ratio, LIMIT_PCT, unit="%", higher_is_better=True,
        measured=f"{fmt(app_rate)} vs {fmt(direct_rate)} tok/s (median of paired ratios {fmt(ratio)} %)"))
    rows = [[i + 1, a["tokens"], fmt(a["decode"]), fmt(a["end_to_end"]), fmt(a["first_token_ms"], 0),
             d["tokens"], fmt(d["decode"]), fmt(d["end_to_end"]), fmt(d["first_token_ms"], 0),
             f"{a['decode'] / d['decode'] * 100:.1f} %"] for i, (a, d) in enumerate(zip(app, direct))]
    result["tables"].append({
        "title": f"SmolLM2-135M-Instruct ({path.name}), up to {MAX_TOKENS} tokens per reply; runs alternate",
        "headers": ["pair", "app: tokens", "app: decode tok/s", "app: end-to-end tok/s", "app: first token (ms)",
                    "direct: tokens", "direct: decode tok/s", "direct: end-to-end tok/s", "direct: first token (ms)",
                    "app ÷ direct (decode)"],
        "rows": rows})
    result["notes"] += [
        "Through the app: one socket sends the prompt to a conversation on the local model; first token = "
        "message.send → first reply.delta. Direct: create_chat_completion(stream=True) in this process; first "
        "token = the call → first chunk.",
        "Both use llama-cpp-python's default thread count (LOCAL_MODEL_THREADS unset) and the app's sampling "
        "(LocalBackend.sampling()), with random seeds, so the replies differ in text; the rates are per token "
        "of whatever was written.",
        "The app needs two busy threads (the model's worker and the event loop relaying its tokens), the direct "
        "call one: when other processes take a core of this 2-core machine, the app side loses more (see the "
        "section header's CPU split).",
    ]
    return result
