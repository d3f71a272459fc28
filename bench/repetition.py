"""`python -m bench.repetition [--max-tokens N] [--prompts N]`: does the local model loop,
and are its titles words from the conversation? (issue 15)

The real SmolLM2-135M-Instruct (the app's GGUF), 20 fixed prompts, a fixed seed per
prompt, once with the sampling the app used before (llama-cpp-python's defaults: no
repetition penalty) and once with `LocalBackend`'s sampling now. For each reply:

- it *loops* when one sentence (3 words or more, compared without case and punctuation)
  appears three times or more; the figure is the share of replies that loop (≤ 10 %);
- the title request of chat/titles.py is sent after it, and the cleaned title counts as
  *from the conversation* when it came from the model (not the fallback to the user's
  words) and most of its words appear in the conversation.

The local model writes about 50 tokens/s on these machines: with the defaults (20 prompts,
160 tokens) one configuration takes about 1.5 minutes on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter

PROMPTS = [
    "What is gravity?",
    "Explain how a rainbow forms.",
    "Give me three tips for learning to cook.",
    "Write a short story about a robot who wants to paint.",
    "How do I sort a list of numbers in Python?",
    "What are the benefits of drinking water?",
    "Describe the city of Paris to a child.",
    "Why do cats purr?",
    "How can I save money on groceries?",
    "Write a poem about the autumn wind.",
    "What is the difference between weather and climate?",
    "Explain photosynthesis in simple words.",
    "What should I pack for a weekend of hiking?",
    "How does a bicycle stay upright?",
    "Tell me about the history of the printing press.",
    "What is a good morning routine for a student?",
    "Explain what a database index is.",
    "How do vaccines work?",
    "Suggest a name and a plan for a small bakery.",
    "What causes the seasons on Earth?",
]
BEFORE = {"temperature": 0.2, "top_p": 0.95, "repeat_penalty": 1.0}  # llama-cpp-python's chat defaults
BEFORE_WINDOW = 64  # Llama(last_n_tokens_size=...) default
TITLE_TOKENS = 24  # as chat/replies.py asks
MIN_SENTENCE_WORDS = 3
LOOP_COUNT = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9']+")
_STOP_WORDS = set("a an and the of to in on for with at by from is are be how what why do does your my".split())


def sentences(text: str) -> list[str]:
    """Sentences (or lines) of a reply, without case, punctuation or list markers."""
    out = []
    for part in _SENTENCE_END.split(text):
        words = _WORD.findall(part.lower())
        if len(words) >= MIN_SENTENCE_WORDS:
            out.append(" ".join(words))
    return out


def loops(text: str) -> bool:
    """One sentence three times or more."""
    counts = Counter(sentences(text))
    return bool(counts) and max(counts.values()) >= LOOP_COUNT


def title_from_conversation(title: str, fallback: str, conversation: str) -> bool:
    """A title the model wrote (not the fallback), most of whose words are in the conversation."""
    if title == fallback:
        return False
    words = [w for w in _WORD.findall(title.lower()) if w not in _STOP_WORDS]
    if not words:
        return False
    said = set(_WORD.findall(conversation.lower()))
    # "Cooking" for "cook": a word counts when the conversation has a word sharing its first 4 letters.
    stems = {w[:4] for w in said}
    found = sum(1 for w in words if w in said or w[:4] in stems)
    return found / len(words) >= 0.5


def generate(llm, messages, max_tokens: int, sampling: dict, seed: int) -> tuple[str, str, int]:
    """(text, finish_reason, tokens) of one generation, streamed as the app streams it."""
    parts, reason, tokens = [], None, 0
    for chunk in llm.create_chat_completion(messages, stream=True, max_tokens=max_tokens, seed=seed, **sampling):
        for choice in chunk.get("choices", []):
            text = choice.get("delta", {}).get("content")
            if text:
                parts.append(text)
                tokens += 1
            reason = choice.get("finish_reason") or reason
    return "".join(parts), reason, tokens


def run_config(name: str, path, window: int, sampling: dict, prompts: list[str], max_tokens: int) -> dict:
    import llama_cpp
    from django.conf import settings

    from chat.titles import clean_title, title_request_messages

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=settings.LOCAL_MODEL_CONTEXT,
                          n_threads=settings.LOCAL_MODEL_THREADS or None, last_n_tokens_size=window, verbose=False)
    rows, started = [], time.monotonic()
    try:
        for seed, prompt in enumerate(prompts):
            reply, reason, tokens = generate(llm, [{"role": "user", "content": prompt}], max_tokens, sampling, seed)
            raw, _, _ = generate(llm, title_request_messages(prompt, reply), TITLE_TOKENS, sampling, seed)
            title, fallback = clean_title(raw, prompt), clean_title("", prompt)
            rows.append({"prompt": prompt, "reply": reply, "finish": reason, "tokens": tokens, "loops": loops(reply),
                         "raw_title": raw, "title": title,
                         "title_ok": title_from_conversation(title, fallback, prompt + "\n" + reply)})
            row = rows[-1]
            print(f"  {name[:6]} {seed:2} {'LOOP' if row['loops'] else '    '} {row['finish']:6} {tokens:3} tok "
                  f"| {title!r:42} | {reply[:70]!r}", flush=True)
    finally:
        llm.close()
    count = len(rows)
    return {"name": name, "rows": rows, "seconds": time.monotonic() - started,
            "loop_share": sum(r["loops"] for r in rows) / count,
            "cut_share": sum(r["finish"] == "length" for r in rows) / count,
            "title_share": sum(r["title_ok"] for r in rows) / count,
            "tokens": sum(r["tokens"] for r in rows) / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--only", choices=["before", "now"], help="run one configuration")
    parser.add_argument("--show", action="store_true", help="print every reply's start and title")
    parser.add_argument("--repeat-penalty", type=float, help="try another penalty in place of the app's")
    parser.add_argument("--window", type=int, help="try another penalty window in place of the app's")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from chat.backends import LocalBackend, local_model_path

    path = local_model_path()
    now = LocalBackend()
    if args.repeat_penalty is not None:
        now.repeat_penalty = args.repeat_penalty
    if args.window is not None:
        now.penalty_window = args.window
    configs = {"before": ("before: llama-cpp-python defaults", BEFORE_WINDOW, BEFORE),
               "now": ("now: LocalBackend.sampling()", now.penalty_window, now.sampling())}
    prompts = PROMPTS[: args.prompts]
    print(f"{path.name}: {len(prompts)} prompts, up to {args.max_tokens} tokens per reply, seed = prompt number")
    for key, (name, window, sampling) in configs.items():
        if args.only and key != args.only:
            continue
        result = run_config(name, path, window, sampling, prompts, args.max_tokens)
        print(f"\n{name} {sampling} penalty window {window} tokens ({result['seconds']:.0f} s)")
        print(f"  replies that repeat one sentence {LOOP_COUNT}+ times: {result['loop_share']:.0%}")
        print(f"  replies cut by the token limit: {result['cut_share']:.0%}; mean tokens {result['tokens']:.0f}")
        print(f"  titles from the conversation: {result['title_share']:.0%}")
        if args.show:
            for row in result["rows"]:
                mark = "LOOP " if row["loops"] else "     "
                print(f"  {mark}{row['prompt'][:40]:40} | {row['title']!r:45} | raw {row['raw_title'][:60]!r}")


if __name__ == "__main__":
    main()
