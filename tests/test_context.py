"""A long conversation keeps working: the model gets the newest turns that fit."""
from __future__ import annotations

import pytest

from chat.backends import LOCAL_MODEL_ID
from chat.context import context_chars, fit_context


def turns(count: int, size: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i:03d}" + "x" * (size - 3)}
            for i in range(count)]


def test_everything_is_sent_when_it_fits():
    messages = [{"role": "system", "content": "be brief"}, *turns(5, 10)]
    assert fit_context(messages, 1000) == messages


def test_oldest_turns_are_dropped_and_the_system_prompt_kept():
    messages = [{"role": "system", "content": "be brief"}, *turns(21, 100)]
    fitted = fit_context(messages, 1000)
    assert fitted[0] == {"role": "system", "content": "be brief"}
    assert fitted[-1] == messages[-1]
    assert sum(len(m["content"]) for m in fitted) <= 1000
    assert fitted[1]["role"] == "user", "the window starts with a user turn"
    assert [m["content"][:3] for m in fitted[1:]] == [f"{i:03d}" for i in range(12, 21)]


def test_a_single_message_longer_than_the_window_keeps_its_end():
    fitted = fit_context([{"role": "user", "content": "a" * 50 + "the question"}], 20)
    assert len(fitted) == 1 and fitted[0]["content"].endswith("the question")
    assert len(fitted[0]["content"]) <= 20


def test_local_model_window_leaves_room_for_the_reply(settings):
    settings.LOCAL_MODEL_CONTEXT, settings.CHAT_MAX_REPLY_TOKENS = 2048, 512
    assert context_chars(LOCAL_MODEL_ID) < (2048 - 512) * 4
    settings.CHAT_MAX_CONTEXT_CHARS = 1234
    assert context_chars("some/remote-model") == 1234


@pytest.mark.slow
async def test_local_model_answers_after_a_conversation_longer_than_its_window():
    from chat.backends import get_backend

    long_turns = [{"role": m["role"], "content": "tell me more about the weather today " * 10} for m in turns(41, 10)]
    messages = fit_context(long_turns, context_chars(LOCAL_MODEL_ID))
    assert len(messages) < len(long_turns)
    stream = get_backend(LOCAL_MODEL_ID).stream(LOCAL_MODEL_ID, messages, max_tokens=8)
    try:
        text = "".join([piece async for piece in stream])
    finally:
        await stream.aclose()
    assert text.strip()
