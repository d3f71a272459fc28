"""Markdown to sanitized HTML, at once and incrementally while a reply streams.

Model output is untrusted input: whatever Markdown it writes, the HTML that leaves
this module is built from an explicit allow-list (nh3), raw HTML in the Markdown is
never passed through, and only http(s)/mailto links survive.

`StreamRenderer` turns a stream of text deltas into `{"append", "tail"}` HTML pieces
whose size and cost per call are bounded by constants, not by the reply's length
(re-rendering the whole reply per delta is O(N^2) over a reply).
"""

from __future__ import annotations

import functools
import re
import textwrap
import threading

import markdown
import nh3
import pygments
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

__all__ = ["render_markdown", "StreamRenderer", "CONT_CLASS"]

# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

_EXTENSIONS = ["fenced_code", "tables", "codehilite", "sane_lists"]
_EXTENSION_CONFIGS = {
    # CSS classes (the page ships a Pygments stylesheet), no guessing: a guess is
    # slow and often wrong on short snippets.
    "codehilite": {"guess_lang": False, "noclasses": False, "css_class": "codehilite"},
    # align="..." instead of style="text-align: ...": we allow no style attributes.
    "tables": {"use_align_attribute": True},
}
_local = threading.local()


def _new_markdown() -> markdown.Markdown:
    """Build a Markdown converter that treats raw HTML as text.

    Without the raw-HTML block preprocessor and inline pattern, `<script>` in the
    model's text reaches the serializer as text and is escaped; nh3 is then a
    second line of defence rather than the only one.
    """
    md = markdown.Markdown(extensions=_EXTENSIONS, extension_configs=_EXTENSION_CONFIGS)
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md


def _markdown_to_html(text: str) -> str:
    """Convert with this thread's converter (unsanitized output: internal only).

    Markdown objects keep state and are not thread-safe. One per thread, reset per
    call, measured about 3x faster than building one per call on the short texts the
    streaming renderer converts (80 us vs 260 us for a sentence).
    """
    md = getattr(_local, "md", None)
    if md is None:
        md = _local.md = _new_markdown()
    return md.reset().convert(text)


# ---------------------------------------------------------------------------
# Sanitizing
# ---------------------------------------------------------------------------

CONT_CLASS = "md-cont"
"""Class on a streamed piece that continues the block of the piece before it, so the
page can make the pieces of one long paragraph / listing / table look continuous."""

_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del",
    "code", "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody",
    "tr", "th", "td", "span", "div", "sup", "sub",
}  # no img: an image URL is fetched without a click (data exfiltration).
_ALIGN = {"align": {"left", "right", "center"}}
_PYGMENTS_CLASSES = {cls for cls in STANDARD_TYPES.values() if cls} | {"hll"}
_CONT_TAGS = ("p", "ul", "ol", "table", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6")

_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags={
        "script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math",
    },
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    tag_attribute_values={"th": _ALIGN, "td": _ALIGN},
    # Only classes Pygments/codehilite (and the streamer) produce: the model must
    # not be able to style its output with the page's own (Bootstrap) classes.
    allowed_classes={
        "span": _PYGMENTS_CLASSES,
        "div": {"codehilite", CONT_CLASS},
        **{tag: {CONT_CLASS} for tag in _CONT_TAGS},
    },
    url_schemes={"http", "https", "mailto"},
    # Relative links would point into this app (e.g. a GET that changes state);
    # a model has no business linking there. Also drops //host links.
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    # A link must not navigate the chat tab away from its live socket.
    set_tag_attribute_values={"a": {"target": "_blank"}},
)


def _sanitize(html: str) -> str:
    """Apply the allow-list; the last step before any HTML leaves this module."""
    return _CLEANER.clean(html)


def render_markdown(text: str) -> str:
    """Render untrusted Markdown to sanitized HTML (the whole text at once)."""
    return _sanitize(_markdown_to_html(_close_open_fence(text)))


def _close_open_fence(text: str) -> str:
    """A reply cut inside a code block (stopped, failed, out of tokens) still renders as code.

    Python-Markdown shows an unclosed fence as a paragraph of backticks; the
    streaming view showed a code block, so the final view must too.
    """
    fence = None
    for line in text.splitlines():
        if fence is None:
            match = _FENCE_OPEN.match(line)
            if match:
                fence = match.group("fence")
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = None
    return text if fence is None else text.rstrip("\n") + "\n" + fence + "\n"


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------

SOFT_LIMIT = 400
"""Once the open text block is longer than this (chars), freeze its finished part."""
HARD_LIMIT = 1200
"""The open text block never stays longer than this after a feed(): past it we cut
even where no clean cut point exists (mid-sentence, mid-link)."""
CODE_SOFT_LIMIT = 160
CODE_HARD_LIMIT = 480
"""The same for fenced code, lower because Pygments' HTML is ~9x the code's size
(the tail is re-sent with every delta). Past the hard limit a line is cut."""

_FEED_STEP = 256

# The opening-fence line as Python-Markdown's fenced_code accepts it (column 0).
_FENCE_OPEN = re.compile(
    r"(?P<fence>~{3,}|`{3,})[ ]*"
    r"(?:\{[^\n.]*(?:\.(?P<attr_lang>[\w#+-]+))?[^\n]*\}"
    r"|\.?(?P<lang>[\w#.+-]*)[ ]*(?:hl_lines=(?P<q>\"|').*?(?P=q)[ ]*)?)$"
)
_LIST_ITEM = re.compile(r"[ ]{0,3}(?:[*+-]|\d+\.)[ ]+\S")
_QUOTE_LINE = re.compile(r"[ ]{0,3}>")
_TABLE_SEP = re.compile(r"[ ]*\|?[ ]*:?-+:?[ ]*(?:\|[ ]*:?-+:?[ ]*)*\|?[ ]*$")
_THEAD = re.compile(r"<thead>.*?</thead>\s*", re.S)
_FIRST_TAG = re.compile(r"^\s*<(%s)\b" % "|".join(_CONT_TAGS))
# Inline tokens that matter for a safe cut, plus the cut candidates themselves.
_INLINE_TOKEN = re.compile(r"\\.|`+|\*+|_+|\]\(|[\[\]()]|\n|(?<=[.!?])[\"')\]]*[ \t]", re.S)


@functools.lru_cache(maxsize=64)
def _highlighter(lang: str) -> tuple[Lexer, HtmlFormatter]:
    """Lexer and formatter for a fence language, built once: codehilite builds a
    formatter per block, which dominated the cost of re-rendering a code tail.
    Same markup as codehilite (div.codehilite > pre > code, class-based spans)."""
    try:
        lexer = get_lexer_by_name(lang) if lang else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    return lexer, HtmlFormatter(cssclass="codehilite", wrapcode=True)


def _mark_cont(html: str) -> str:
    """Add CONT_CLASS to the first element of a rendered piece."""
    if html.lstrip().startswith('<div class="'):
        return html.replace('<div class="', f'<div class="{CONT_CLASS} ', 1)
    return _FIRST_TAG.sub(rf'<\1 class="{CONT_CLASS}"', html, count=1)


def _is_delimiter(text: str, start: int, end: int) -> bool:
    """Whether a run of * or _ can open/close emphasis (not `a * b`, not snake_case)."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isspace() and after.isspace():
        return False
    return not (text[start] == "_" and before.isalnum() and after.isalnum())


def _balanced_cut(text: str, limit: int) -> tuple[int, int] | None:
    """Last (piece_end, rest_start) within text[:limit] at a line end or after a
    sentence end, where no code span, emphasis or link is left open.

    Cutting there keeps both pieces' inline Markdown intact. One regex pass over at
    most `limit` chars: bounded work.
    """
    code_run = stars = unders = brackets = link_parens = 0
    best = None
    window = text[:limit]
    for m in _INLINE_TOKEN.finditer(window):
        tok = m.group()
        if code_run and tok == "\\`":  # no escapes inside a code span
            tok = "`"
        if tok[0] == "`":
            code_run = len(tok) if code_run == 0 else (0 if len(tok) == code_run else code_run)
        elif code_run or tok[0] == "\\":
            continue
        elif tok[0] == "*" and _is_delimiter(window, m.start(), m.end()):
            stars += len(tok)
        elif tok[0] == "_" and _is_delimiter(window, m.start(), m.end()):
            unders += len(tok)
        elif tok == "](":
            brackets, link_parens = max(brackets - 1, 0), link_parens + 1
        elif tok == "[":
            brackets += 1
        elif tok == "]":
            brackets = max(brackets - 1, 0)
        elif tok == "(" and link_parens:
            link_parens += 1
        elif tok == ")" and link_parens:
            link_parens -= 1
        elif tok[-1] in "\n \t" and not (stars % 2 or unders % 2 or brackets or link_parens):
            best = (m.end() - 1, m.end())
    return best


def _line_cut(text: str, limit: int, next_line: re.Pattern[str] | None) -> tuple[int, int] | None:
    """Last line end within text[:limit] whose next line matches `next_line` (any
    line if None): lists cut before an item, quotes before a `>` line."""
    pos = text.rfind("\n", 0, limit)
    while pos >= 0:
        if next_line is None or next_line.match(text, pos + 1):
            return pos, pos + 1
        pos = text.rfind("\n", 0, pos)
    return None


class StreamRenderer:
    """Incremental Markdown renderer for one streaming reply.

    feed() returns `{"append": html, "tail": html}`: `append` holds the blocks this
    delta finished (self-contained, sanitized fragments the client appends), `tail`
    the unfinished last block (shown after them, replacing the previous tail).

    Only the open block is kept and rendered, and it is kept short: blocks end at
    blank lines outside fenced code and at closing fences, and an open block longer
    than SOFT_LIMIT has its finished part frozen into `append` (code: complete lines,
    as a code block of the same language; tables: complete rows; lists: whole items;
    paragraphs: up to a sentence or line end with no inline construct open). Frozen
    pieces that continue a block carry the class CONT_CLASS. So the work and the
    bytes per call are bounded by the delta's size plus a constant.

    The streamed HTML may differ slightly from render_markdown() of the whole text;
    finish() returns the latter and the client replaces the streamed HTML with it.
    """

    def __init__(self, keep_text: bool = True) -> None:
        """keep_text=False: do not hold a copy of the reply; pass it to finish()."""
        self._parts: list[str] | None = [] if keep_text else None
        self._open = ""  # raw text of the open block (code only, inside a fence)
        self._line_start = 0  # where the open block's unfinished line starts
        self._fence: str | None = None  # "```" / "~~~~" while inside fenced code
        self._lang = ""  # the open fence's language
        # A split table's header + separator: continuation pieces are rendered with
        # it (so they parse as a table) and then lose their <thead>.
        self._table_head: str | None = None
        self._cont = False  # the open block continues an already frozen piece
        # The last finished block was a list: an indented block after it is the
        # items' continuation (Markdown), not an indented code block.
        self._in_list = False

    # -- public -------------------------------------------------------------

    def feed(self, delta: str) -> dict[str, str]:
        """Take the next piece of the reply; return the HTML to append and the tail."""
        if self._parts is not None:
            self._parts.append(delta)
        delta = delta.replace("\r", "")
        out: list[str] = []
        # In steps, so that a huge delta (say the whole reply so far, fed to a new
        # renderer) never makes the buffer long: work stays linear in the delta.
        for i in range(0, len(delta), _FEED_STEP):
            self._open += delta[i:i + _FEED_STEP]
            self._close_blocks(out)
            self._freeze(out)
        return {"append": "".join(out), "tail": self._render_open()}

    def finish(self, text: str | None = None) -> str:
        """The whole reply rendered at once (`text`, or the text fed so far)."""
        if text is None:
            if self._parts is None:
                raise ValueError("StreamRenderer(keep_text=False).finish() needs the text")
            text = "".join(self._parts)
        return render_markdown(text)

    # -- finishing whole blocks --------------------------------------------

    def _close_blocks(self, out: list[str]) -> None:
        """Emit every block that the complete lines now in the buffer have ended."""
        while (nl := self._open.find("\n", self._line_start)) >= 0:
            start, line = self._line_start, self._open[self._line_start:nl]
            self._line_start = nl + 1
            if self._fence is not None:
                if line.rstrip(" ") == self._fence:
                    self._emit_code(self._open[:start], out)
                    self._start_block(nl + 1)
            elif not line.strip():
                kind = self._kind()
                self._emit_text(self._open[:start], out)
                self._start_block(nl + 1)
                self._in_list = kind == "list" or (self._in_list and kind == "indented")
            elif m := _FENCE_OPEN.match(line):
                self._emit_text(self._open[:start], out)
                self._start_block(nl + 1)
                self._fence, self._in_list = m.group("fence"), False
                self._lang = m.group("lang") or m.group("attr_lang") or ""

    def _start_block(self, pos: int) -> None:
        """Drop the finished text before `pos`; what follows is a fresh block."""
        self._open = self._open[pos:]
        self._line_start = 0
        self._fence, self._table_head, self._cont = None, None, False

    def _emit_text(self, text: str, out: list[str]) -> None:
        if text.strip():
            out.append(self._render_text(text))

    def _emit_code(self, code: str, out: list[str]) -> None:
        if code.strip("\n") or not self._cont:  # no empty box after a frozen piece
            out.append(self._render_code(code))

    # -- freezing part of a long open block ----------------------------------

    def _freeze(self, out: list[str]) -> None:
        """Move the finished part of an over-long open block into `out`."""
        while len(self._open) > self._limits()[0]:
            cut = self._find_cut()
            if cut is None:
                if len(self._open) <= self._limits()[1]:
                    return
                cut = self._hard_cut()
            end, rest = cut
            piece = self._open[:end]
            if self._fence is not None:
                self._emit_code(piece, out)
            else:
                kind = self._kind()
                self._emit_text(piece, out)
                if kind == "table" and self._table_head is None:
                    self._table_head = "\n".join(piece.split("\n", 2)[:2]) + "\n"
                if kind != "indented":  # leading spaces would make the rest code
                    rest += len(self._open) - rest - len(self._open[rest:].lstrip())
            self._open = self._open[rest:]
            self._line_start = max(0, self._line_start - rest)
            self._cont = True

    def _limits(self) -> tuple[int, int]:
        """(soft, hard) length limits of the open block."""
        if self._fence is not None:
            return CODE_SOFT_LIMIT, CODE_HARD_LIMIT
        return SOFT_LIMIT, HARD_LIMIT

    def _kind(self) -> str:
        """What the open (non-fenced) block is, from its first lines."""
        if self._table_head is not None:
            return "table"
        first, _, more = self._open.partition("\n")
        if _LIST_ITEM.match(first):
            return "list"
        if first.lstrip(" ").startswith(">"):
            return "quote"
        if first.startswith(("    ", "\t")):
            return "indented"
        if "|" in first and "\n" in more and _TABLE_SEP.match(more.partition("\n")[0]):
            return "table"
        return "para"

    def _find_cut(self) -> tuple[int, int] | None:
        """A clean place to split the open block, or None if there is none yet."""
        text, hard = self._open, self._limits()[1]
        if self._fence is not None:
            return _line_cut(text, hard, None)
        kind = self._kind()
        if kind == "table":
            cut = _line_cut(text, hard, None)
            header_end = 0 if self._table_head is not None else self._nth_line_end(2)
            return cut if cut and header_end is not None and cut[0] >= header_end else None
        if kind == "indented":
            return _line_cut(text, hard, None)
        nxt = {"list": _LIST_ITEM, "quote": _QUOTE_LINE}.get(kind)
        cut = _line_cut(text, hard, nxt) if nxt else None
        return cut or _balanced_cut(text, hard)

    def _hard_cut(self) -> tuple[int, int]:
        """Cut at the last line end (code) or space (text) before HARD_LIMIT, or at
        HARD_LIMIT itself: the bound wins over pretty output."""
        text, hard = self._open, self._limits()[1]
        pos = text.rfind("\n", 0, hard)
        if self._fence is None and pos <= 0:
            pos = max(text.rfind(" ", 0, hard), text.rfind("\t", 0, hard))
        return (pos, pos + 1) if pos > 0 else (hard, hard)

    def _nth_line_end(self, n: int) -> int | None:
        pos = -1
        for _ in range(n):
            pos = self._open.find("\n", pos + 1)
            if pos < 0:
                return None
        return pos

    # -- rendering --------------------------------------------------------------

    def _render_open(self) -> str:
        """HTML of the open block (the tail)."""
        if self._fence is not None:  # a closing fence without its newline yet
            partial = self._open[self._line_start:]
            closed = partial.rstrip(" ") == self._fence
            return self._render_code(self._open[: self._line_start] if closed else self._open)
        return self._render_text(self._open) if self._open.strip() else ""

    def _render_text(self, text: str) -> str:
        if self._in_list and text[:1] in " \t":
            text = textwrap.dedent(text)
        if self._table_head is not None:
            html = _THEAD.sub("", _markdown_to_html(self._table_head + text), count=1)
        else:
            html = _markdown_to_html(text)
        return _sanitize(_mark_cont(html) if self._cont else html)

    def _render_code(self, code: str) -> str:
        """Render code lines as a code block in the open fence's language."""
        html = pygments.highlight(code.strip("\n"), *_highlighter(self._lang))
        return _sanitize(_mark_cont(html) if self._cont else html)
