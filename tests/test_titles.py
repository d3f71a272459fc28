"""Title prompt and the cleaning of awkward model answers."""

import pytest

from chat.titles import (
    LAST_RESORT,
    MAX_CONTEXT_CHARS,
    MAX_REPLY_CHARS,
    TITLE_PROMPT,
    TITLE_SYSTEM,
    clean_title,
    title_request_messages,
)
from tests.fake_model_server import TITLE_PREFIX

USER = "How do I cook pasta at home without a pot? Please help me"
FALLBACK = "How do I cook pasta at"


def test_prompt_asks_for_a_short_title_only():
    assert TITLE_PROMPT.startswith(TITLE_PREFIX)  # the scripted model recognises it
    assert "title only" in TITLE_PROMPT


def test_title_request_messages():
    messages = title_request_messages("hi there", "Hello! How can I help?")
    assert messages == [
        {"role": "system", "content": TITLE_SYSTEM},
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": TITLE_PROMPT},
    ]


def test_title_request_truncates_long_texts_and_keeps_only_the_start_of_the_reply():
    messages = title_request_messages("u" * 50_000, "a" * 50_000)
    assert messages[1]["content"].startswith("uuu")
    assert len(messages[1]["content"]) <= MAX_CONTEXT_CHARS + 10
    assert messages[2]["content"].startswith("aaa") and len(messages[2]["content"]) <= MAX_REPLY_CHARS + 10
    assert messages[3]["content"] == TITLE_PROMPT


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('Title: "Hello World"', "Hello World"),
        ("**Title:** Cooking pasta at home", "Cooking pasta at home"),
        ("# Python list sorting tips 🐍", "Python list sorting tips"),
        ("“Quick Pasta Tips” (5 words)", "Quick Pasta Tips"),
        ("'Budget travel in Japan'", "Budget travel in Japan"),
        ("Here is a title: [Pasta Guide](https://example.com)", "Pasta Guide"),
        ("Sure! Here's a 5-word title for this conversation:\n\n**Cooking Pasta Without A Pot**\n\nIt captures it.",
         "Cooking Pasta Without A Pot"),
        ("Conversation title - Budget Travel in Japan", "Budget Travel in Japan"),
        ("1. Pasta Basics\n2. Cooking Pasta\n3. Pasta 101", "Pasta Basics"),
        ("<think>The user asks about pasta.</think>\nPasta 101: Cooking Basics!!!", "Pasta 101: Cooking Basics"),
        ("Learning C++ and C# 👨‍👩‍👧 quickly ✨", "Learning C++ and C# quickly"),
        ("Let's talk about dogs' toys.", "Let's talk about dogs' toys"),
        ("Title IX compliance guide", "Title IX compliance guide"),
        ("`snake_case` vs *camelCase* naming", "snake_case vs camelCase naming"),
        ("   Spaced    out\ttitle   here...   ", "Spaced out title here"),
    ],
)
def test_clean_title(raw, expected):
    assert clean_title(raw, USER) == expected


def test_long_answer_is_cut_to_eight_words():
    raw = " ".join(f"word{i}" for i in range(20))
    assert clean_title(raw, USER) == " ".join(f"word{i}" for i in range(8))


def test_max_chars_cuts_at_a_word_boundary():
    raw = "Supercalifragilistic expialidocious extraordinarily lengthy vocabulary demonstration"
    title = clean_title(raw, USER, max_chars=40)
    assert len(title) <= 40 and raw.startswith(title) and not title.endswith(" ")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   \n\n  ",
        "🐍🎉✨",
        "...!!!",
        "\"\"",
        "**Title:**",
        "I'm sorry, I cannot help with that request.",
        "I’m sorry, but I can’t create a title for this.",
        "Sorry, as an AI I have no opinion.",
        "As an AI language model, I cannot",
        "Unfortunately I am unable to do that",
        TITLE_PROMPT,
        "Descriptive 5-word title with no emojis",
        "Here's a 3-word description of the conversation",  # SmolLM2, bench/repetition.py
        None,
    ],
)
def test_junk_falls_back_to_user_text(raw):
    assert clean_title(raw, USER) == FALLBACK


def test_fallback_is_cleaned_too():
    assert clean_title("", "## **Help** me fix `my_code` 🙏 please now today!") == "Help me fix my_code please now"
    assert clean_title("", "```python\nprint(1)\n```\nWhy does this fail?") == "Why does this fail"


def test_never_empty():
    assert clean_title("", "") == LAST_RESORT
    assert clean_title("🎉", "🎉🎉 !!!") == LAST_RESORT
    assert clean_title(None, None) == LAST_RESORT
