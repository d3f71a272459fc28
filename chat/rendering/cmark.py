"""GitHub's cmark-gfm (the C library that renders Markdown on github.com), called directly.

The library comes compiled inside the `cmarkgfm` package. Its Python helpers never free
the parsed tree nor the HTML string (theacodes/cmarkgfm#53: ~35 KB lost per call, which a
server rendering every delta cannot afford), and they give no access to the tree. So
this module declares the few C functions it needs itself, in cffi's ABI mode, against
the library cmarkgfm already loaded, and frees what it allocates.

What it offers: parse a text once, read its top-level blocks (type and source lines),
render the whole document or one block to HTML, with raw HTML turned into plain text.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cffi
from cmarkgfm import _cmark

_ffi = cffi.FFI()
_ffi.cdef("""
typedef struct cmark_node cmark_node;
typedef struct cmark_parser cmark_parser;
typedef struct cmark_iter cmark_iter;
typedef struct cmark_llist cmark_llist;
typedef struct cmark_syntax_extension cmark_syntax_extension;
void cmark_gfm_core_extensions_ensure_registered(void);
cmark_syntax_extension *cmark_find_syntax_extension(const char *name);
cmark_parser *cmark_parser_new(int options);
int cmark_parser_attach_syntax_extension(cmark_parser *parser, cmark_syntax_extension *extension);
void cmark_parser_feed(cmark_parser *parser, const char *buffer, size_t len);
cmark_node *cmark_parser_finish(cmark_parser *parser);
cmark_llist *cmark_parser_get_syntax_extensions(cmark_parser *parser);
void cmark_parser_free(cmark_parser *parser);
char *cmark_render_html(cmark_node *root, int options, cmark_llist *extensions);
void cmark_node_free(cmark_node *node);
cmark_node *cmark_node_new(int type);
cmark_node *cmark_node_first_child(cmark_node *node);
cmark_node *cmark_node_next(cmark_node *node);
int cmark_node_get_type(cmark_node *node);
int cmark_node_get_start_line(cmark_node *node);
int cmark_node_get_end_line(cmark_node *node);
int cmark_node_get_fenced(cmark_node *node, int *length, int *offset, char *character);
const char *cmark_node_get_literal(cmark_node *node);
int cmark_node_set_literal(cmark_node *node, const char *content);
int cmark_node_append_child(cmark_node *node, cmark_node *child);
int cmark_node_replace(cmark_node *oldnode, cmark_node *newnode);
cmark_iter *cmark_iter_new(cmark_node *root);
int cmark_iter_next(cmark_iter *iter);
cmark_node *cmark_iter_get_node(cmark_iter *iter);
void cmark_iter_free(cmark_iter *iter);
void free(void *ptr);
""")
_lib = _ffi.dlopen(_cmark.__file__)
_libc = _ffi.dlopen(None)

# Node types (cmark-gfm.h).
_BLOCK, _INLINE = 0x8000, 0xC000
BLOCK_QUOTE, LIST, ITEM, CODE_BLOCK, HTML_BLOCK = (_BLOCK | n for n in (2, 3, 4, 5, 6))
PARAGRAPH, HEADING, THEMATIC_BREAK = _BLOCK | 8, _BLOCK | 9, _BLOCK | 10
TEXT, HTML_INLINE = _INLINE | 1, _INLINE | 5
_EVENT_ENTER = 2

# CMARK_OPT_UNSAFE keeps the renderer from replacing raw HTML with a comment: raw HTML
# nodes never reach it (they become text first, see _raw_html_to_text).
_OPTIONS = 1 << 17
_EXTENSIONS = (b"table", b"strikethrough", b"autolink", b"tasklist")
_lib.cmark_gfm_core_extensions_ensure_registered()
_extensions = [_lib.cmark_find_syntax_extension(name) for name in _EXTENSIONS]


@dataclass(frozen=True)
class Block:
    """A top-level block: its type, its first and last source line (1-based), and the node."""

    type: int
    start: int
    end: int
    node: object


_SPARE_PARSERS = 4  # kept per thread; more are only made while Documents are nested
_spare = threading.local()


def _take_parser() -> object:
    """A parser with the GFM extensions attached: a spare one of this thread, or a new one.

    Making one and attaching its four extensions was about a third of parsing a short
    text (the streaming renderer parses on nearly every delta). `cmark_parser_finish`
    hands the tree over and resets the parser (its extensions stay), so it can parse
    the next text."""
    spare = _spare.__dict__.setdefault("parsers", [])
    if spare:
        return spare.pop()
    parser = _lib.cmark_parser_new(_OPTIONS)
    for extension in _extensions:
        _lib.cmark_parser_attach_syntax_extension(parser, extension)
    return parser


def _give_back(parser: object) -> None:
    spare = _spare.__dict__.setdefault("parsers", [])
    if len(spare) < _SPARE_PARSERS:
        spare.append(parser)
    else:
        _lib.cmark_parser_free(parser)


class Document:
    """A parsed text; free() it (or use it as a context manager) when done."""

    def __init__(self, text: str) -> None:
        data = text.encode("utf-8")
        self._parser = _take_parser()  # held until free(): html() needs its extensions
        _lib.cmark_parser_feed(self._parser, data, len(data))
        self._root = _lib.cmark_parser_finish(self._parser)
        if b"<" in data:
            _raw_html_to_text(self._root)

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def free(self) -> None:
        if self._root is not None:
            _lib.cmark_node_free(self._root)
            _give_back(self._parser)
            self._root = self._parser = None

    def blocks(self) -> list[Block]:
        out, node = [], _lib.cmark_node_first_child(self._root)
        while node != _ffi.NULL:
            out.append(Block(_lib.cmark_node_get_type(node), _lib.cmark_node_get_start_line(node),
                             _lib.cmark_node_get_end_line(node), node))
            node = _lib.cmark_node_next(node)
        return out

    def children(self, block: Block) -> list[Block]:
        out, node = [], _lib.cmark_node_first_child(block.node)
        while node != _ffi.NULL:
            out.append(Block(_lib.cmark_node_get_type(node), _lib.cmark_node_get_start_line(node),
                             _lib.cmark_node_get_end_line(node), node))
            node = _lib.cmark_node_next(node)
        return out

    def html(self, block: Block | None = None) -> str:
        """HTML of one block, or of the whole document."""
        node = self._root if block is None else block.node
        raw = _lib.cmark_render_html(node, _OPTIONS, _lib.cmark_parser_get_syntax_extensions(self._parser))
        try:
            return _ffi.string(raw).decode("utf-8")
        finally:
            _libc.free(raw)


def fenced(block: Block) -> bool:
    """Whether a code block is fenced (``` or ~~~) rather than indented."""
    length, offset, char = _ffi.new("int *"), _ffi.new("int *"), _ffi.new("char *")
    return bool(_lib.cmark_node_get_fenced(block.node, length, offset, char))


def _raw_html_to_text(root: object) -> None:
    """Raw HTML in the model's text is shown as the text it is, never as HTML.

    (Dropping it, cmark's safe mode, would lose what the model wrote, e.g. `<T>`.)
    """
    found = []
    it = _lib.cmark_iter_new(root)
    try:
        while (event := _lib.cmark_iter_next(it)) != 1:  # CMARK_EVENT_DONE
            if event == _EVENT_ENTER:
                node = _lib.cmark_iter_get_node(it)
                kind = _lib.cmark_node_get_type(node)
                if kind in (HTML_BLOCK, HTML_INLINE):
                    found.append((node, kind))
    finally:
        _lib.cmark_iter_free(it)
    for node, kind in found:
        literal = _ffi.string(_lib.cmark_node_get_literal(node))
        text = _lib.cmark_node_new(TEXT)
        _lib.cmark_node_set_literal(text, literal.rstrip(b"\n") if kind == HTML_BLOCK else literal)
        if kind == HTML_BLOCK:
            para = _lib.cmark_node_new(PARAGRAPH)
            _lib.cmark_node_append_child(para, text)
            text = para
        _lib.cmark_node_replace(node, text)
        _lib.cmark_node_free(node)


def to_html(text: str) -> str:
    """The whole text as HTML (unsanitized: for this package's own use)."""
    with Document(text) as doc:
        return doc.html()
