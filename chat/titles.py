"""Conversation titles: the prompt that asks the model for one, and cleaning its answer.

Small models answer "give me a title" with chatter ("Sure! Here's a title:"),
Markdown, quotes, emojis, several candidates or a refusal. The sidebar needs one
short plain line, so we clean hard and fall back to the user's own words.
"""

from __future__ import annotations

import re
import unicodedata

TITLE_PROMPT = "Give this conversation a descriptive title of 3 to 5 words. Answer with the title only."
TITLE_SYSTEM = "You name conversations. You answer with a short title and nothing else."
"""Issue 15: with the reply's whole text and no system message, SmolLM2-135M went on
writing the reply instead of a title; a short excerpt and a role keep it on the task."""
MAX_CONTEXT_CHARS = 3000
"""Of the user's message sent with the title request: the start says what the chat is
about, and a long message must not make the title request slow or overflow a small context."""
MAX_REPLY_CHARS = 600
"""Of the reply: enough to know its subject when the question was vague ("hi")."""
NO_REPLY = "(no reply)"
FALLBACK_WORDS = 6
LAST_RESORT = "New chat"

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_CODE_BLOCK = re.compile(r"^(`{3,}|~{3,}).*?(?:^\1[ ]*$|\Z)", re.S | re.M)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINE_MARKUP = re.compile(r"^\s*(?:#{1,6}\s*|>\s*|[-*+]\s+|\d+[.)]\s+)+")
_EMPHASIS = re.compile(r"[*`~]+|(?<!\w)_+|_+(?!\w)")
_PREAMBLE = re.compile(  # "Sure! Here's a 5-word title for this conversation: ..."
    r"^.{0,60}?\btitles?\b(?:\s+(?:for|of)\s+(?:this|the|your|our)\s+(?:conversation|chat))?"
    r"(?:\s+(?:could|would|might)\s+be|\s+is)?(?:\s*:|\s+[-\u2013\u2014]\s)\s*",
    re.I,
)
_CHATTER_LINE = re.compile(  # a lead-in line with the title on the next line
    r"^(?:sure|certainly|okay|ok|of course|absolutely|here|how about|i suggest|i'd suggest"
    r"|suggested|a possible|possible|a good|a descriptive)\b.*\b(?:titles?|descriptions?)\b[^:]*:?$",
    re.I,
)
_WORD_COUNT_NOTE = re.compile(  # "Pasta Tips (5 words)"
    r"\s*\((?:\d+|one|two|three|four|five|six|seven|eight)[- ]words?\)$", re.I
)
_REFUSAL = re.compile(
    r"^(?:i'?m sorry|i am sorry|sorry|i apologi[sz]e|i can(?:no|')?t|i cannot|i'?m unable"
    r"|i am unable|i'?m not able|i am not able|i won'?t|as an ai|unfortunately)\b",
    re.I,
)
_PROMPT_WORDS = set(re.findall(r"\w+", TITLE_PROMPT.lower())) | {"words", "emoji", "emojis", "descriptive", "5-word"}
_DOUBLE_QUOTES = "\"\u201c\u201d\u201e\u00ab\u00bb\u2039\u203a"
_QUOTES = _DOUBLE_QUOTES + "'\u2018\u2019`"
_DROP_SYMBOLS = set("|<>^~=\\{}[]")
_EDGE_PUNCT = " \t.,;:!?-\u2013\u2014\u2026/" + _QUOTES
_EDGE_PUNCT_KEEP_SINGLE = _EDGE_PUNCT.replace("'", "").replace("\u2018", "").replace("\u2019", "")
_DROP_CATEGORIES = {"So", "Sk", "Cf", "Co", "Cs", "Cc", "Me"}


def title_request_messages(user_text: str, reply_text: str) -> list[dict]:
    """Messages for the title request: a role, the first exchange (the reply cut
    short), then TITLE_PROMPT."""
    # A first reply that failed or was stopped before its first word: the turns still
    # alternate (some chat templates refuse two user turns in a row).
    reply = _truncate(reply_text, MAX_REPLY_CHARS) if (reply_text or "").strip() else NO_REPLY
    return [
        {"role": "system", "content": TITLE_SYSTEM},
        {"role": "user", "content": _truncate(user_text)},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": TITLE_PROMPT},
    ]


def clean_title(raw: str, fallback_text: str, max_words: int = 8, max_chars: int = 80) -> str:
    """One short plain-text title from the model's answer, never empty.

    Falls back to the first words of `fallback_text` (the user's first message)
    when the answer is empty, junk, a refusal or the prompt echoed back.
    """
    title = _title_from_answer(raw or "", max_words, max_chars)
    if title:
        return title
    words = min(max_words, FALLBACK_WORDS)
    fallback = _limit(_fallback_text(fallback_text or ""), words, max_chars)
    return fallback if _has_words(fallback) else LAST_RESORT


def _truncate(text: str, limit: int = MAX_CONTEXT_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _fallback_text(text: str) -> str:
    """The user's message as plain prose: code blocks out (unless that is all)."""
    prose = _CODE_BLOCK.sub(" ", text)
    lines = [_plain(line) for line in (prose if prose.strip() else text).splitlines()]
    return " ".join(line for line in lines if line)


def _title_from_answer(raw: str, max_words: int, max_chars: int) -> str:
    """The first line of the answer that is a usable title, or "" if it is junk."""
    for line in _THINK.sub("", raw).splitlines():
        line = _plain(line)
        if not line or _CHATTER_LINE.match(line):
            continue
        line = _PREAMBLE.sub("", line, count=1)
        line = _limit(_plain(_WORD_COUNT_NOTE.sub("", line)), max_words, max_chars)
        if not line:
            continue
        return "" if _is_junk(line) else line
    return ""


def _plain(text: str) -> str:
    """Text without Markdown, quotes, emojis/symbols, edge punctuation or extra spaces."""
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _EMPHASIS.sub("", _LINE_MARKUP.sub("", text))
    text = "".join(_keep_char(c) for c in text)
    return " ".join(text.split()).strip(_EDGE_PUNCT_KEEP_SINGLE)


def _keep_char(char: str) -> str:
    """Drop emojis (and their joiners/variation selectors), symbols and quotes,
    but keep apostrophes inside words ("Let's") and + # for C++ / C#."""
    if char in _DOUBLE_QUOTES or char in _DROP_SYMBOLS:
        return " "
    if unicodedata.category(char) in _DROP_CATEGORIES or 0xFE00 <= ord(char) <= 0xFE0F:
        return " " if unicodedata.category(char) in {"So", "Sk", "Cc"} else ""
    return char


def _limit(text: str, max_words: int, max_chars: int) -> str:
    """At most max_words words and max_chars characters, cut at a word boundary."""
    text = " ".join(w for w in _unquote_words(text.split()[:max_words]) if w)
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        text = text[: cut if cut > 0 else max_chars]
    return text.strip(_EDGE_PUNCT)


def _unquote_words(words: list[str]) -> list[str]:
    """Drop quotes around words; a single quote is only dropped as the close of an
    opening one, since otherwise it is an apostrophe (dogs' toys)."""
    out, quoted = [], False
    for word in words:
        if word[:1] in _QUOTES:
            word, quoted = word.lstrip(_QUOTES), True
        word = word.rstrip(_DOUBLE_QUOTES)
        if quoted and word[-1:] in ("'", "\u2019"):
            word, quoted = word.rstrip("'\u2019"), False
        out.append(word)
    return out


def _has_words(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _is_junk(title: str) -> bool:
    """Only punctuation, a refusal, or the prompt echoed back."""
    if not _has_words(title) or _REFUSAL.match(title.replace("\u2019", "'")):
        return True
    words = re.findall(r"\w+", title.lower())
    echoed = sum(w in _PROMPT_WORDS for w in words)
    return echoed / len(words) >= 0.6
