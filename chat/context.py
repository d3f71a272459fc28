"""What of a conversation the model gets to see: the newest turns that fit its window.

A long conversation must keep working: the local model's window is 2,048 tokens,
and a transcript outgrows that in a few turns. The system prompt always goes, then
as many of the newest messages as fit; the newest user message is kept even when
it alone is too long (its beginning is cut instead).
"""
from __future__ import annotations

from django.conf import settings

from chat.backends import LOCAL_MODEL_ID

CHARS_PER_TOKEN = 3  # a cautious average for English text and code


def context_chars(model_id: str) -> int:
    """The prompt budget in characters, leaving room for the reply."""
    if model_id == LOCAL_MODEL_ID:
        tokens = settings.LOCAL_MODEL_CONTEXT - settings.CHAT_MAX_REPLY_TOKENS - 64  # chat template overhead
        return max(tokens, 256) * CHARS_PER_TOKEN
    return settings.CHAT_MAX_CONTEXT_CHARS


def fit_context(messages: list[dict], max_chars: int) -> list[dict]:
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    budget = max_chars - sum(len(m["content"]) for m in system)
    kept: list[dict] = []
    for message in reversed(turns):
        if len(message["content"]) <= budget:
            kept.append(message)
            budget -= len(message["content"])
        elif not kept:
            kept.append({**message, "content": "…" + message["content"][-max(budget - 1, 1):]})
            break
        else:
            break
    kept.reverse()
    while kept and kept[0]["role"] == "assistant":  # a window starts with the user's words
        kept.pop(0)
    return system + kept
