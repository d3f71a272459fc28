"""The streaming renderer: a reply's deltas in, `{"append", "tail"}` HTML pieces out.

The appended pieces plus the last tail have the structure of render_markdown() of the
whole reply (so nothing jumps when the reply completes), and the work and bytes per
delta are bounded by constants, whatever the reply's length or content:

- Only the open region is kept: the text after the last committed block. When a line
  completes, the region is parsed (cmark, microseconds) and every top-level block that
  later text can no longer change is committed into `append`: all but the last, and the
  last too once a blank line closes it (not lists or indented code, which a blank line
  does not close). A block that shows a literal `[…]` is held back a while, since a
  link reference definition further down would turn it into a link.
- A block that stays open past SOFT_LIMIT has its finished part frozen (paragraphs at a
  point where no inline construct is open, lists before an item, tables after a row,
  code at line ends); the pieces after the first carry CONT_CLASS. Past HARD_LIMIT the
  bound wins over exactness.
- A top-level fenced code block is not re-parsed at all: its lines are escaped into the
  tail and highlighted once, when committed.
- The tail is re-rendered per delta, except when the delta only adds plain words to the
  end of a paragraph (most tokens): then the new text is spliced into the last tail.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from chat.rendering import cmark, cuts
from chat.rendering.html import code_block, fragment

SOFT_LIMIT = 240
"""Once the open block is longer than this (chars), freeze its finished part."""
PARA_SOFT_LIMIT = 160
"""The same for a paragraph, whose pieces the page shows inline as one paragraph: a
shorter tail is fewer bytes and less work per delta."""
HARD_LIMIT = 600
"""The open region never stays longer than this after a feed(): past it we cut even
where no clean cut point exists (mid-sentence, mid-link)."""
CODE_SOFT_LIMIT = 160
"""Fenced code: complete lines are committed (highlighted) past this many chars."""
CODE_HARD_LIMIT = 480
"""Fenced code: a single line longer than this is cut (an endless line must not grow the tail)."""
HOLD_LIMIT = 1500
"""Blocks showing `[…]` wait for a link definition at most while the region is this short."""
REFS_LIMIT = 4000
"""Link reference definitions remembered for the rest of the reply (chars)."""
_FEED_STEP = 256
_CUT_SEARCH_STEP = 32

_FENCE_OPEN = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_LIST_ITEM = re.compile(r" {0,3}(?:[*+-]|\d{1,9}[.)])(?:[ \t]|$)")
_QUOTE_LINE = re.compile(r" {0,3}>")
_DEFINITION = re.compile(r" {0,3}\[[^\]]+\]:")
_LITERAL_BRACKETS = re.compile(r"\[[^\]]*\]")
_CODE_HTML = re.compile(r"<code>.*?</code>|<pre>.*?</pre>", re.S)
_CLOSING_TAGS = re.compile(r"(?:</[a-z0-9]+>\s*)+$")
_PLAIN_RUN = re.compile(r"(?:[^\W_]|[ ,.?!])*")


@dataclass
class _Fence:
    indent: int
    marker: str
    info: str
    opening: str  # the opening line, kept to render a short block exactly as a whole
    pieces: int = 0  # pieces of this block already appended


class StreamRenderer:
    """Incremental Markdown renderer for one streaming reply (see the module doc)."""

    def __init__(self, keep_text: bool = True) -> None:
        """keep_text=False: do not hold a copy of the reply; pass it to finish()."""
        self._parts: list[str] | None = [] if keep_text else None
        self._open = ""
        self._cont = False  # the open block continues an already appended piece
        self._table_head: str | None = None  # header + delimiter of a table being continued
        self._fence: _Fence | None = None
        self._refs = ""
        self._base: tuple[str, str, str] | None = None  # (text, html before closing tags, closing tags)
        self._plain_upto = 0  # the open text up to here is base text + plain words
        self._no_cut_below = 0  # no clean cut point exists in a shorter open block

    # -- public -------------------------------------------------------------

    def feed(self, delta: str) -> dict[str, str]:
        """Take the next piece of the reply; return the HTML to append and the tail."""
        if self._parts is not None:
            self._parts.append(delta)
        delta = delta.replace("\r\n", "\n").replace("\r", "\n")
        out: list[str] = []
        # In steps, so that a huge delta (the whole reply so far, fed to a new
        # renderer) never makes the region long: work stays linear in the delta.
        for i in range(0, len(delta), _FEED_STEP):
            step = delta[i:i + _FEED_STEP]
            self._open += step
            if "\n" in step or len(self._open) > PARA_SOFT_LIMIT:
                self._advance(out)
        return {"append": "".join(out), "tail": self._tail()}

    def finish(self, text: str | None = None) -> str:
        """The whole reply rendered at once (`text`, or the text fed so far)."""
        from chat.rendering import render_markdown

        if text is None:
            if self._parts is None:
                raise ValueError("StreamRenderer(keep_text=False).finish() needs the text")
            text = "".join(self._parts)
        return render_markdown(text)

    # -- committing ------------------------------------------------------------

    def _advance(self, out: list[str]) -> None:
        for _ in range(64):  # each round commits something or stops
            if self._fence is not None:
                if not self._code_lines(out):
                    return
            elif not self._commit_blocks(out):
                if len(self._open) > PARA_SOFT_LIMIT:
                    self._freeze(out)
                return

    def _commit_blocks(self, out: list[str]) -> bool:
        """Commit the finished top-level blocks of the region's complete lines.
        True if a fenced code block was entered (the caller goes on with it)."""
        end = self._open.rfind("\n") + 1
        if end == 0:
            return False
        complete = self._open[:end]
        prefix = self._parse_prefix(complete)
        skip = prefix.count("\n")
        lines = complete.split("\n")[:-1]
        with cmark.Document(prefix + complete) as doc:
            blocks = [b for b in doc.blocks() if b.start > skip]
            if not blocks:
                return False
            last = blocks[-1]
            fence = None
            if last.type == cmark.CODE_BLOCK and cmark.fenced(last):
                fence = _FENCE_OPEN.fullmatch(lines[last.start - skip - 1])
            closed_by_blank = last.type not in (cmark.LIST, cmark.CODE_BLOCK) \
                and not lines[last.start - skip - 1].lstrip().startswith("<")
            if fence is not None and self._fence_is_open(lines[last.start - skip:], fence):
                keep = last.start - skip - 1  # the opening fence line: enter fence mode
            elif last.type in (cmark.HEADING, cmark.THEMATIC_BREAK) or (
                    closed_by_blank and last.end - skip < len(lines) and not lines[-1].strip()):
                keep = len(lines)
            else:
                keep = last.start - skip - 1
        if keep <= 0 and fence is None:
            return False
        committed = "\n".join(lines[:keep]) + "\n" if keep else ""
        if committed.strip():
            piece = fragment(self._refs + committed if "[" in committed else committed, self._cont, self._table_head)
            if self._held(piece) and len(self._open) < HOLD_LIMIT:
                return False
            out.append(piece)
        self._remember_refs(committed)
        self._open = self._open[len(committed):]
        self._cont, self._table_head, self._base, self._no_cut_below = False, None, None, 0
        if fence is not None and keep == last.start - skip - 1:
            opening, _, rest = self._open.partition("\n")
            self._fence = _Fence(len(fence.group(1)), fence.group(2), fence.group(3).strip(), opening + "\n")
            self._open = rest
            return True
        return False

    def _parse_prefix(self, text: str) -> str:
        prefix = self._table_head or ""
        return (self._refs + "\n" + prefix) if self._refs and "[" in text else prefix

    @staticmethod
    def _fence_is_open(body: list[str], fence: re.Match) -> bool:
        marker = fence.group(2)
        for line in body:
            stripped = line.strip()
            if len(line) - len(line.lstrip(" ")) < 4 and stripped.startswith(marker[0] * len(marker)) \
                    and not stripped.strip(marker[0]):
                return False
        return True

    @staticmethod
    def _held(piece: str) -> bool:
        """Whether a piece shows `[…]` that a later link definition could turn into a link."""
        if "[" not in piece:
            return False
        return bool(_LITERAL_BRACKETS.search(_CODE_HTML.sub("", piece)))

    def _remember_refs(self, committed: str) -> None:
        if "]:" not in committed or len(self._refs) >= REFS_LIMIT:
            return
        defs, inside = [], False
        for line in committed.split("\n"):
            if _DEFINITION.match(line):
                inside = True
                defs.append(line)
            elif inside and line.strip() and not _LIST_ITEM.match(line):
                defs.append(line)  # a title or URL on the next line
            else:
                inside = False
        if defs:
            self._refs = (self._refs + "\n".join(defs) + "\n\n")[:REFS_LIMIT]

    # -- fenced code -------------------------------------------------------------

    def _code_lines(self, out: list[str]) -> bool:
        """Handle complete lines inside a fenced code block. True if it closed."""
        fence = self._fence
        assert fence is not None
        start = 0
        while (nl := self._open.find("\n", start)) >= 0:
            line = self._open[start:nl]
            stripped = line.strip()
            if len(line) - len(line.lstrip(" ")) < 4 and stripped.startswith(fence.marker) \
                    and not stripped.strip(fence.marker[0]):
                body = self._open[:start]
                if fence.pieces == 0:
                    out.append(fragment(fence.opening + body + line + "\n"))
                elif body:
                    out.append(self._code_piece(body))
                self._fence, self._open = None, self._open[nl + 1:]
                return True
            start = nl + 1
        if start > CODE_SOFT_LIMIT or len(self._open) > CODE_HARD_LIMIT:
            # Past the hard limit one endless line is cut too: the bound wins.
            end = start if start > 0 else CODE_HARD_LIMIT
            out.append(self._code_piece(self._open[:end]))
            fence.pieces += 1
            self._open = self._open[end:]
        return False

    def _code_piece(self, body: str, highlight: bool = True) -> str:
        fence = self._fence
        assert fence is not None
        lines = [_dedent(line, fence.indent) for line in body.split("\n")]
        return code_block("\n".join(lines), html.unescape(fence.info), cont=fence.pieces > 0, highlight=highlight)

    # -- freezing part of a long open block ----------------------------------

    def _freeze(self, out: list[str]) -> None:
        """Move the finished part of an over-long open block into `out`."""
        while len(self._open) > PARA_SOFT_LIMIT:
            if len(self._open) < self._no_cut_below:
                return  # searched recently: look again once the block has grown a bit
            kind = self._kind()
            if kind != "para" and len(self._open) <= SOFT_LIMIT:
                return
            cut = self._find_cut(kind)
            if cut is None:
                if len(self._open) <= HARD_LIMIT:
                    self._no_cut_below = len(self._open) + _CUT_SEARCH_STEP
                    return
                cut = self._hard_cut()
            end, rest = cut
            piece = self._open[:end]
            out.append(fragment(piece, self._cont, self._table_head))
            if kind == "table" and self._table_head is None:
                self._table_head = "\n".join(piece.split("\n", 2)[:2]) + "\n"
            if kind not in ("indented", "list"):  # leading spaces would make the rest code
                rest += len(self._open) - rest - len(self._open[rest:].lstrip(" \t"))
            self._open = self._open[rest:]
            self._cont, self._base, self._no_cut_below = True, None, 0

    def _kind(self) -> str:
        if self._table_head is not None:
            return "table"
        first, _, more = self._open.partition("\n")
        if _LIST_ITEM.match(first):
            return "list"
        if _QUOTE_LINE.match(first):
            return "quote"
        if first.startswith(("    ", "\t")):
            return "indented"
        if "|" in first and re.match(r" {0,3}\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$", more.partition("\n")[0]):
            return "table"
        return "para"

    def _find_cut(self, kind: str) -> tuple[int, int] | None:
        text = self._open
        if kind in ("table", "indented"):
            cut = cuts.line_cut(text, HARD_LIMIT, None)
            if kind == "table" and self._table_head is None and cut is not None:
                header_end = cuts.nth_line_end(text, 2)
                return cut if header_end is not None and cut[0] >= header_end else None
            return cut
        if kind == "list":
            return cuts.line_cut(text, HARD_LIMIT, _LIST_ITEM, min_pos=1)
        if kind == "quote":
            return cuts.line_cut(text, HARD_LIMIT, _QUOTE_LINE, min_pos=1)
        return cuts.balanced_cut(text, HARD_LIMIT)

    def _hard_cut(self) -> tuple[int, int]:
        text = self._open
        pos = text.rfind("\n", 0, HARD_LIMIT)
        if pos <= 0:
            pos = max(text.rfind(" ", 0, HARD_LIMIT), text.rfind("\t", 0, HARD_LIMIT))
        return (pos, pos + 1) if pos > 0 else (HARD_LIMIT, HARD_LIMIT)

    # -- the tail ----------------------------------------------------------------

    def _tail(self) -> str:
        """HTML of the open region (the unfinished last block)."""
        text = self._open
        if self._fence is not None:
            line = text[text.rfind("\n") + 1:].strip()
            if line and line.startswith(self._fence.marker) and not line.strip(self._fence.marker[0]):
                text = text[:text.rfind("\n") + 1]  # its closing fence, without the newline yet
            if not text:
                return "" if self._fence.pieces else code_block("", self._fence.info)
            return self._code_piece(text.removesuffix("\n"), highlight=False)
        if not text.strip():
            self._base = None
            return ""
        if self._no_cut_below and len(text) > SOFT_LIMIT:
            # A long block with no clean cut point (hostile or odd text): shown as plain
            # text until it is cut, so that no delta re-parses hundreds of constructs.
            cont = ' class="md-cont"' if self._cont else ""
            return f"<p{cont}>{html.escape(text.strip(), quote=False)}</p>\n"
        base = self._base
        if base is not None and text.startswith(base[0]):
            # Only the characters added since the last check are looked at: O(delta).
            if _PLAIN_RUN.fullmatch(text, self._plain_upto) \
                    and "www." not in text[max(self._plain_upto - 4, len(base[0]) - len(_last_word(base[0]))):]:
                self._plain_upto = len(text)
                return base[1] + html.escape(text[len(base[0]):].rstrip(), quote=False) + base[2]
        out = fragment(self._refs + text if self._refs and "[" in text else text, self._cont, self._table_head)
        self._base = _splice_point(text, out)
        self._plain_upto = len(text)
        return out


def _splice_point(text: str, out: str) -> tuple[str, str, str] | None:
    """Where plain words added to `text` would appear in its HTML, if that is certain:
    at the end of the last text node of a paragraph, heading or item."""
    last = text[-1]
    if not (last.isalnum() or last in ".,?!"):
        return None
    line = text[text.rfind("\n") + 1:]
    if line.startswith(("    ", "\t")) or not any(ch.isalpha() for ch in line) \
            or line.lstrip(" >").startswith("[") or "\ue000" in text:
        return None
    word = _last_word(text)
    if ":" in word or "@" in word or "www." in word or "&" in word:
        return None
    m = _CLOSING_TAGS.search(out)
    if m is None or not out[:m.start()].endswith(last) or out.count("<p") + out.count("<h") + out.count("<li") == 0:
        return None
    return text, out[:m.start()], out[m.start():]


def _last_word(text: str) -> str:
    return text[max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1:]


def _dedent(line: str, indent: int) -> str:
    strip = min(indent, len(line) - len(line.lstrip(" ")))
    return line[strip:]
