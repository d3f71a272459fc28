"""LaTeX math in model replies: found outside code, typeset server-side as MathML.

Models write `$…$`, `$$…$$`, `\\(…\\)` and `\\[…\\]`. The Markdown parser would eat the
backslashes and read `_` / `*` inside formulas as emphasis, so math spans are swapped
for placeholders before parsing and for MathML after (latex2mathml: pure Python, no
CDN, works on the share page and in exports). Dollar rules as in Pandoc: an opening `$`
is followed by a non-space, a closing `$` follows a non-space and is not followed by a
digit, so prices ("$5 and $10") stay text. Bad or oversized LaTeX shows as its source.
The MathML is sanitized with everything else (latex2mathml passes `\\text{<script>}`
through as markup).
"""
from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable

from latex2mathml.converter import convert

PLACEHOLDER = "\ue000"
_INDEX_BASE = 0xE100
MAX_SPANS = 256
"""Math spans typeset per rendering; more are shown as source (bounded work)."""
MAX_LATEX = 2000
MAX_DEPTH = 40
"""Longer or deeper-nested formulas are shown as source: latex2mathml recurses."""
MAX_INLINE = 1000
MAX_CODE_SPAN = 4000
"""How far a code span's closing backticks are looked for (bounded work per run)."""

_FENCE_LINE = re.compile(r"(?:[ \t]*>)*[ \t]*(?:(?:[-*+]|\d+[.)])[ \t]+)*(`{3,}|~{3,})")
_TOKEN = re.compile(r"\\[\\$`]|\\\(|\\\[|`+|\$\$|\$|\]\([^)\s]*")


def protect(text: str) -> tuple[str, list[tuple[str, bool, str]]]:
    """The text with each math span replaced by a placeholder, and the spans
    (latex, display, source) in order."""
    if "$" not in text and "\\(" not in text and "\\[" not in text:
        return text, []
    # The placeholder's marker is a private-use character; one in the text itself
    # (icon fonts use that range) is the only character this can change.
    text = text.replace(PLACEHOLDER, "\ufffd")
    spans: list[tuple[str, bool, str]] = []
    out: list[str] = []
    for segment, is_code in _segments(text):
        out.append(segment if is_code else _protect_segment(segment, spans))
    return "".join(out), spans


def _segments(text: str):
    """(text, is_fenced_code) pieces, split at fence lines (nested or not)."""
    fence = None
    start = pos = 0
    for line in text.splitlines(keepends=True):
        m = _FENCE_LINE.match(line)
        if fence is None and m:
            if pos > start:
                yield text[start:pos], False
            start, fence = pos, m.group(1)
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line[m.end():].strip():
            yield text[start:pos + len(line)], True
            start, fence = pos + len(line), None
        pos += len(line)
    if start < len(text):
        yield text[start:], fence is not None


def _protect_segment(text: str, spans: list) -> str:
    out, i = [], 0
    while True:
        m = _TOKEN.search(text, i)
        if m is None or len(spans) >= MAX_SPANS:
            out.append(text[i:])
            return "".join(out)
        tok, start = m.group(), m.start()
        end = None
        if tok[0] == "\\" and len(tok) == 2 and tok[1] in "\\$`":
            out.append(text[i:m.end()])
            i = m.end()
            continue
        if tok[0] == "]":  # a link destination is a URL, not math
            out.append(text[i:m.end()])
            i = m.end()
            continue
        if tok[0] == "`":  # a code span: skip to the matching run, if any
            close = _code_closer(len(tok)).search(text, m.end(), m.end() + MAX_CODE_SPAN)
            skip = close.end() if close and "\n\n" not in text[m.end():close.start()] else m.end()
            out.append(text[i:skip])
            i = skip
            continue
        if tok == "$$":
            close = text.find("$$", m.end())
            body = text[m.end():close] if close >= 0 else ""
            if close >= 0 and body.strip() and "\n\n" not in body:
                end, latex, display = close + 2, body, True
        elif tok == "$":
            end, latex, display = _dollar(text, m.end())
        elif tok in ("\\(", "\\["):
            close = text.find("\\)" if tok == "\\(" else "\\]", m.end())
            body = text[m.end():close] if close >= 0 else ""
            if close >= 0 and body.strip() and "\n\n" not in body:
                end, latex, display = close + 2, body, tok == "\\["
        if end is None:
            out.append(text[i:m.end()])
            i = m.end()
            continue
        out.append(text[i:start])
        out.append(PLACEHOLDER + chr(_INDEX_BASE + len(spans)))
        spans.append((latex.strip(), display, text[start:end]))
        i = end


@functools.lru_cache(maxsize=64)
def _code_closer(length: int) -> re.Pattern[str]:
    return re.compile(r"(?<!`)" + "`" * length + r"(?!`)")


def _dollar(text: str, pos: int) -> tuple[int | None, str, bool]:
    if pos >= len(text) or text[pos].isspace() or text[pos] == "$":
        return None, "", False
    limit = min(len(text), pos + MAX_INLINE)
    j = pos
    while (j := text.find("$", j, limit)) >= 0:
        if text[j - 1] == "\\":
            j += 1
            continue
        if text[j - 1].isspace() or (j + 1 < len(text) and text[j + 1].isdigit()):
            return None, "", False  # "$5 and $10": the second $ cannot close
        body = text[pos:j]
        return (j + 1, body, False) if "\n\n" not in body else (None, "", False)
    return None, "", False


_PLACEHOLDER_RE = re.compile(PLACEHOLDER + "([\ue100-\ue1ff])")
_BLOCK_PARAGRAPH = re.compile(r"<p>(" + PLACEHOLDER + "[\ue100-\ue1ff])</p>")


_TAG_OR_CODE = re.compile(r"(<pre\b.*?</pre>|<code\b.*?</code>|<[^>]*>)", re.S)


def restore(html_text: str, spans: list[tuple[str, bool, str]], clean: Callable[[str], str]) -> str:
    """Put the typeset math in place of the placeholders of sanitized HTML.

    Each formula's MathML is sanitized on its own with `clean` (and cached), so the
    reply's HTML is sanitized without it: MathML is verbose, and cleaning it again with
    every delta cost milliseconds. Only placeholders in text become MathML; one in an
    attribute, a code span or a code block becomes its source text again.
    """
    if not spans:
        return html_text

    def source(match: re.Match) -> str:
        return html.escape(spans[ord(match.group(1)) - _INDEX_BASE][2])

    def typeset(match: re.Match) -> str:
        latex, display, src = spans[ord(match.group(1)) - _INDEX_BASE]
        return clean_mathml(latex, display, clean) or html.escape(src, quote=False)

    parts = _TAG_OR_CODE.split(html_text)
    for i, part in enumerate(parts):
        if PLACEHOLDER in part:
            parts[i] = _PLACEHOLDER_RE.sub(source if i % 2 else typeset, part)
    return "".join(parts)


@functools.lru_cache(maxsize=2048)
def clean_mathml(latex: str, display: bool, clean: Callable[[str], str]) -> str | None:
    out = mathml(latex, display)
    return clean(out) if out else None


def mathml(latex: str, display: bool) -> str | None:
    """MathML for a formula with its TeX source as annotation, or None if it does not typeset."""
    if len(latex) > MAX_LATEX or _depth(latex) > MAX_DEPTH:
        return None
    try:
        out = convert(latex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - any failure of the converter means "show the source"
        return None
    head = out.index(">") + 1
    tail = out.rindex("</math>")
    annotation = f'<annotation encoding="application/x-tex">{html.escape(latex, quote=False)}</annotation>'
    return f"{out[:head]}<semantics>{out[head:tail]}{annotation}</semantics></math>"


def _depth(latex: str) -> int:
    depth = deepest = 0
    for ch in latex:
        if ch in "{[(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}])":
            depth -= 1
    return deepest


def open_before(text: str) -> bool:
    """Whether math may be open at the end of `text` (an opener with no closer yet), so
    that a streamed piece must not end there. `$` before a digit is taken for a price."""
    tail = text[-MAX_INLINE:]
    if "$" not in tail and "\\(" not in tail and "\\[" not in tail:
        return False
    protected, _ = protect(tail)
    return bool(re.search(r"(?<!\\)\$(?![\d\s])|\\\(|\\\[", protected))
