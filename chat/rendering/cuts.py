"""Where a long open block can be cut while it streams, so that both pieces render as
the whole would: line ends before a list item or quote line, or a space in a paragraph
where no inline construct is open. Each is one pass over at most HARD_LIMIT characters."""
from __future__ import annotations

import re

from chat.rendering import math

_INLINE_TOKEN = re.compile(r"\\.|`+|\*+|_+|~+|\$+|\]\(|[\[\]()<>]|\n|[ \t]", re.S)


def nth_line_end(text: str, n: int) -> int | None:
    pos = -1
    for _ in range(n):
        pos = text.find("\n", pos + 1)
        if pos < 0:
            return None
    return pos


def line_cut(text: str, limit: int, next_line: re.Pattern[str] | None, min_pos: int = 0) -> tuple[int, int] | None:
    """Last line end within text[:limit] whose next line matches `next_line` (any line
    if None): lists are cut before an item, quotes before a `>` line."""
    pos = text.rfind("\n", 0, limit)
    while pos >= min_pos:
        if pos + 1 < len(text) and (next_line is None or next_line.match(text, pos + 1)):
            if text.find("\n", pos + 1) >= 0:  # the next line is complete
                return pos, pos + 1
        pos = text.rfind("\n", 0, pos)
    return None


def balanced_cut(text: str, limit: int) -> tuple[int, int] | None:
    """Last (piece_end, rest_start) within text[:limit] at a space or line end, where no
    code span, emphasis, strikethrough, math, link or autolink is open, and the rest
    starts with a letter (which cannot start a block). One regex pass: bounded work."""
    code_run = stars = unders = tildes = brackets = parens = angles = 0
    candidates: list[tuple[int, int]] = []
    window = text[:limit]
    for m in _INLINE_TOKEN.finditer(window):
        tok, pos = m.group(), m.start()
        if code_run:
            if tok[0] == "`" and len(tok) == code_run:
                code_run = 0
            continue
        ch = tok[0]
        if ch == "\\":
            continue
        if ch == "`":
            code_run = len(tok)
        elif ch == "*" and _is_delimiter(window, pos, m.end()):
            stars += 1  # runs, not characters: "**" opens once
        elif ch == "_" and _is_delimiter(window, pos, m.end()):
            unders += 1
        elif ch == "~":
            tildes += 1
        elif tok == "](":
            brackets, parens = max(brackets - 1, 0), parens + 1
        elif ch == "[":
            brackets += 1
        elif ch == "]":
            brackets = max(brackets - 1, 0)
        elif ch == "(" and parens:
            parens += 1
        elif ch == ")" and parens:
            parens -= 1
        elif ch == "<":
            angles += 1
        elif ch == ">" and angles:
            angles -= 1
        elif ch in " \t\n":
            nxt = window[m.end():m.end() + 1]
            prev = window[pos - 1:pos]
            if (not (stars % 2 or unders % 2 or tildes % 2 or brackets or parens or angles)
                    and (nxt.isalpha() or nxt == "$") and prev not in (" ", "\\", "") and pos > 0):
                candidates.append((pos, m.end()))
    for cut in reversed(candidates[-4:]):  # math is checked last: it needs a scan of its own
        if not math.open_before(window[:cut[0]]):
            return cut
    return None


def _is_delimiter(text: str, start: int, end: int) -> bool:
    """Whether a run of * or _ can open/close emphasis (not `a * b`, not snake_case)."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isspace() and after.isspace():
        return False
    return not (text[start] == "_" and before.isalnum() and after.isalnum())
