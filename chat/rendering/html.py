"""From the parser's HTML to what leaves this package: code highlighted, math typeset,
everything passed through one allow-list (nh3).

Model output is untrusted: raw HTML never reaches here as markup (see cmark.py), and
the allow-list is the second line of defence. Only http(s)/mailto links survive, and
links open in a new tab without access to this one.
"""
from __future__ import annotations

import functools
import html
import re

import nh3
import pygments
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from chat.rendering import cmark, math

CONT_CLASS = "md-cont"
"""Class on a streamed piece that continues the block of the piece before it, so the
page can make the pieces of one long paragraph / listing / table look continuous."""

_MATHML = {
    "math", "semantics", "annotation", "mrow", "mi", "mo", "mn", "ms", "mtext", "mspace", "msup", "msub",
    "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "merror", "mmultiscripts", "mprescripts", "none",
}
_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span", "div",
    "sup", "sub", "input", *_MATHML,
}  # no img: an image URL is fetched without a click (data exfiltration).
_ALIGN = {"align": {"left", "right", "center"}}
_PYGMENTS_CLASSES = {cls for cls in STANDARD_TYPES.values() if cls} | {"hll"}
_CONT_TAGS = ("p", "ul", "ol", "table", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6")
_MATH_ATTRS = {
    "math": {"display"}, "annotation": {"encoding"}, "mo": {"stretchy", "fence", "separator", "lspace", "rspace",
    "largeop", "movablelimits", "form", "minsize", "maxsize", "symmetric"},
    "mspace": {"width", "height", "depth"}, "mstyle": {"displaystyle", "scriptlevel", "mathvariant"},
    "mi": {"mathvariant"}, "mn": {"mathvariant"}, "mtext": {"mathvariant"}, "mfrac": {"linethickness"},
    "mover": {"accent"}, "munder": {"accentunder"}, "munderover": {"accent", "accentunder"},
    "mtable": {"columnalign", "rowspacing", "columnspacing", "columnlines", "rowlines", "frame"},
    "mtd": {"columnalign"}, "menclose": {"notation"}, "mpadded": {"width", "height", "depth", "lspace", "voffset"},
}

_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags={"script", "style", "iframe", "object", "embed", "template", "noscript", "svg"},
    attributes={"a": {"href", "title"}, "ol": {"start"}, "div": {"data-lang"}, "input": {"checked"},
                **_MATH_ATTRS},
    tag_attribute_values={"th": _ALIGN, "td": _ALIGN, "input": {"type": {"checkbox"}}},
    # Only classes Pygments and the streamer produce: the model must not be able to
    # style its output with the page's own (Bootstrap) classes.
    allowed_classes={
        "span": _PYGMENTS_CLASSES,
        "div": {"codehilite", CONT_CLASS},
        **{tag: {CONT_CLASS} for tag in _CONT_TAGS},
    },
    url_schemes={"http", "https", "mailto"},
    # Relative links would point into this app (e.g. a GET that changes state); a
    # model has no business linking there. Also drops //host links.
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    # A link must not navigate the chat tab away from its live socket; a task-list
    # box is a picture of the model's text, not a control.
    set_tag_attribute_values={"a": {"target": "_blank"}, "input": {"disabled": ""}},
)


def sanitize(html_text: str) -> str:
    """Apply the allow-list; the last step before any parsed HTML leaves this package."""
    return _CLEANER.clean(html_text)


@functools.lru_cache(maxsize=64)
def _highlighter(lang: str) -> tuple[Lexer, HtmlFormatter]:
    """Lexer and formatter for a fence language, built once (a formatter per block
    dominated the cost of highlighting a short piece)."""
    try:
        lexer = get_lexer_by_name(lang, stripnl=False) if lang else TextLexer(stripnl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False)
    return lexer, HtmlFormatter(cssclass="codehilite", wrapcode=True)


def code_block(code: str, lang: str, cont: bool = False, highlight: bool = True) -> str:
    """A code block as the page shows it: Pygments classes, the language as data-lang
    (the stylesheet prints it), `md-cont` when it continues the previous piece.

    highlight=False: escaped text only, for the unfinished tail of a streaming listing
    (highlighting it on every delta would cost ~10x more; its lines are highlighted
    when they are committed)."""
    lang = lang.split()[0] if lang.strip() else ""
    lang = lang if _LANG.fullmatch(lang) else ""
    classes = f"{CONT_CLASS} codehilite" if cont else "codehilite"
    label = f' data-lang="{lang}"' if lang and not cont else ""
    if highlight:
        body = pygments.highlight(code, *_highlighter(lang.lower()))
        body = body[body.index("<pre>"):body.rindex("</div>")]
    else:
        body = f"<pre><span></span><code>{html.escape(code, quote=False)}</code></pre>"
    return f'<div class="{classes}"{label}>{body}</div>\n'


_LANG = re.compile(r"[\w#+.-]{1,32}")
_CODE_BLOCK = re.compile(r'<pre><code(?: class="language-([^"]*)")?>(.*?)</code></pre>\n?', re.S)
_FIRST_TAG = re.compile(r"^\s*<({})\b".format("|".join(_CONT_TAGS)))


def _highlight_all(html_text: str) -> str:
    return _CODE_BLOCK.sub(lambda m: code_block(html.unescape(m.group(2)), html.unescape(m.group(1) or "")), html_text)


def mark_cont(html_text: str) -> str:
    """Add CONT_CLASS to the first element of a rendered piece."""
    if html_text.lstrip().startswith('<div class="'):
        return html_text.replace('<div class="', f'<div class="{CONT_CLASS} ', 1)
    return _FIRST_TAG.sub(rf'<\1 class="{CONT_CLASS}"', html_text, count=1)


_DEEP_QUOTE = re.compile(r"^((?:[ ]{0,3}>){16})(?:[ ]{0,3}>)+", re.M)


MAX_CELLS = 2000
"""A text with more table cells than this has its overlong rows shown as text."""
MAX_ROW_CELLS = 64


def _too_many_cells(text: str) -> str:
    return "\n".join(line.replace("|", "\\|") if line.count("|") > MAX_ROW_CELLS else line
                     for line in text.split("\n"))


def fragment(text: str, cont: bool = False, table_head: str | None = None) -> str:
    """Markdown text to sanitized HTML: parse, highlight code, typeset math, clean.

    table_head: the header and delimiter rows of a table this text continues (its rows
    are parsed as that table's, and the repeated header is dropped)."""
    if ">>>>>>>>>>>>>>>>" in text:  # cmark-gfm is quadratic in block quote depth: cap it
        text = _DEEP_QUOTE.sub(r"\1", text)
    if text.count("|") > MAX_CELLS:  # and slow on tables of thousands of cells
        text = _too_many_cells(text)
    protected, spans = math.protect(text if table_head is None else table_head + text)
    out = cmark.to_html(protected)
    if table_head is not None:
        out = re.sub(r"<thead>.*?</thead>\s*", "", out, count=1, flags=re.S)
    if "<pre>" in out:
        out = _highlight_all(out)
    out = sanitize(mark_cont(out) if cont else out)
    return math.restore(out, spans, sanitize)
