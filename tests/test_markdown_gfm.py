"""What models write, rendered as GitHub renders it (GFM), with math typeset; the same
structure while streaming; and bounded work per delta whatever the reply contains."""
from __future__ import annotations

import random
import re

import pytest

from chat.rendering import StreamRenderer, cmark, math, render_markdown
from chat.rendering.stream import HARD_LIMIT, REFS_LIMIT
from tests.html_structure import structure
from tests.test_rendering import assert_safe


def streamed(text: str, seed: int = 0, max_len: int = 4) -> str:
    """The HTML a tab builds: every `append`, then the last `tail` (pieces of 1-max_len chars)."""
    rng = random.Random(seed)
    renderer = StreamRenderer(keep_text=False)
    shown, tail, i = [], "", 0
    while i < len(text):
        n = rng.randint(1, max_len)
        out = renderer.feed(text[i:i + n])
        shown.append(out["append"])
        tail = out["tail"]
        i += n
    return "".join(shown) + tail


PATTERNS = {
    "list after a line": ("Here are the steps:\n1. Preheat the oven.\n2. Mix.\n3. Bake.",
                          "<p>Here are the steps:</p><ol><li>Preheat the oven.</li><li>Mix.</li><li>Bake.</li></ol>"),
    "list after a bold label": ("**Ingredients:**\n- flour\n- eggs",
                                "<p><strong>Ingredients:</strong></p><ul><li>flour</li><li>eggs</li></ul>"),
    "2-space nested list": ("- fruit\n  - apple\n  - pear\n- veg",
                            "<ul><li>fruit<ul><li>apple</li><li>pear</li></ul></li><li>veg</li></ul>"),
    "3-space nested under numbers": ("1. First\n   - detail\n2. Second",
                                     "<ol><li>First<ul><li>detail</li></ul></li><li>Second</li></ol>"),
    "table after a line": ("Compare them:\n| name | qty |\n|---|---:|\n| apple | 3 |",
                           "<p>Compare them:</p><table><thead><tr><th>name</th><th>qty</th></tr></thead>"
                           "<tbody><tr><td>apple</td><td>3</td></tr></tbody></table>"),
    "task list": ("- [ ] todo\n- [x] done", "<ul><li><input> todo</li><li><input> done</li></ul>"),
    "strikethrough": ("It was ~~old~~ new.", "<p>It was <del>old</del> new.</p>"),
    "bare URLs": ("See https://example.com/a?b=1 and www.example.org now.",
                  "<p>See <a>https://example.com/a?b=1</a> and <a>www.example.org</a> now.</p>"),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_models_markdown_renders_as_github_does(name):
    text, expected = PATTERNS[name]
    html = render_markdown(text)
    assert_safe(html)
    assert structure(html) == structure(expected), html


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_reply_has_the_final_structure(name, seed):
    text = PATTERNS[name][0]
    assert structure(streamed(text, seed)) == structure(render_markdown(text))


def test_task_list_boxes_are_disabled_and_checked_as_written():
    html = render_markdown("- [ ] todo\n- [x] done")
    boxes = re.findall(r"<input[^>]*>", html)
    assert len(boxes) == 2 and all('type="checkbox"' in b and "disabled" in b for b in boxes)
    assert "checked" not in boxes[0] and "checked" in boxes[1]


def test_bare_urls_become_safe_links():
    html = render_markdown("Go to www.example.org or https://example.com.")
    assert 'href="http://www.example.org"' in html and 'href="https://example.com"' in html
    assert html.count('rel="noopener noreferrer nofollow"') == 2 and html.count('target="_blank"') == 2


@pytest.mark.parametrize("text, display", [
    ("Energy: $E = mc^2$.", "inline"),
    ("Energy: \\(E = mc^2\\).", "inline"),
    ("Energy:\n\n$$E = mc^2$$", "block"),
    ("Energy:\n\n\\[E = mc^2\\]", "block"),
    ("$$\n\\frac{a_1}{b_1}\n$$", "block"),
])
def test_math_in_all_four_notations_is_typeset(text, display):
    html = render_markdown(text)
    assert_safe(html)
    assert f'<math display="{display}">' in html
    assert "<mi>E</mi>" in html or "<mfrac>" in html
    assert "$" not in re.sub(r"<annotation.*?</annotation>", "", html)


def test_math_keeps_underscores_and_stars_out_of_emphasis():
    html = render_markdown("Sum $a_1 + b_1$ and $x*y*z$ here.")
    assert "<em>" not in html and html.count("<math") == 2


@pytest.mark.parametrize("text", [
    "It costs $5 and $10.",
    "Between $5 and $6 dollars, or $ 7.",
    "Prices: $5, $10, $20 (about $35 total).",
])
def test_prices_stay_text(text):
    html = render_markdown(text)
    assert "<math" not in html and "$5" in html


def test_math_in_code_stays_code():
    html = render_markdown("Use `$x$` or:\n\n```\n$y$ and \\(z\\)\n```")
    assert "<math" not in html and "<code>$x$</code>" in html and "$y$ and \\(z\\)" in html


@pytest.mark.parametrize("text", ["Bad: $\\frac{$ here.", "Deep: $" + "{" * 60 + "x" + "}" * 60 + "$."])
def test_bad_latex_shows_its_source_and_the_reply_goes_on(text):
    html = render_markdown(text + "\n\nNext paragraph.")
    assert "<math" not in html
    assert "$" in html and "<p>Next paragraph.</p>" in html


@pytest.mark.parametrize("latex", [
    "\\text{<script>alert(1)</script>}",
    "\\href{javascript:alert(1)}{x}",
    "\\text{<img src=x onerror=alert(1)>}",
    "\\style{color:red}{x}",
])
def test_no_script_runs_through_math(latex):
    for text in (f"${latex}$", f"$${latex}$$", f"\\({latex}\\)"):
        html = render_markdown(text)
        assert_safe(html)
        markup = re.sub(r"<annotation.*?</annotation>", "", html)  # the TeX source, escaped
        assert "javascript" not in markup and "<script" not in html and "onerror" not in markup


def test_math_streams_to_its_final_form():
    text = "The area is $\\pi r^2$, and\n\n$$\\int_0^1 x\\,dx = \\frac{1}{2}$$\n\nDone, for $5."
    for seed in (1, 2, 3):
        assert structure(streamed(text, seed)) == structure(render_markdown(text))


def test_link_reference_defined_later_still_links_after_streaming():
    text = "See [the docs][d] for more.\n\nOther text.\n\n[d]: https://example.com/docs\n"
    html = streamed(text, 4)
    assert structure(html) == structure(render_markdown(text)) and 'href="https://example.com/docs"' in html


def test_raw_html_in_a_reply_is_shown_as_text():
    html = render_markdown("Use <div> tags.\n\n<div>\nblock\n</div>")
    assert "&lt;div&gt; tags" in html and "&lt;div&gt;" in html.split("</p>", 1)[1] and "<div>" not in html


# ---------------------------------------------------------------------------
# Bounded work per delta (issue 16: no reply may block the event loop)
# ---------------------------------------------------------------------------

HOSTILE = {
    "unbalanced [": "[" * 16_000,
    "link openers": "[a](" * 4000,
    "deep quotes": ">" * 16_000,
    "deep lists": "".join("  " * i + "- x\n" for i in range(80)) * 4,
    "emphasis runs": "*a " * 2700 + "a* " * 2700,
    "backticks": "".join("`" * (i % 40 + 1) + "x" for i in range(760)),
    "dollar runs": "$x$ " * 4000,
    "wide table": "|" + "a|" * 1000 + "\n|" + "-|" * 1000 + "\n" + ("|" + "x|" * 1000 + "\n") * 5,
}


@pytest.fixture
def parsed_sizes(monkeypatch):
    """Records the size of every text the renderer hands to the parser."""
    sizes: list[int] = []
    original = cmark.Document.__init__

    def counting(self, text):
        sizes.append(len(text))
        original(self, text)

    monkeypatch.setattr(cmark.Document, "__init__", counting)
    return sizes


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_parser_work_per_delta_is_bounded_by_construction(name, parsed_sizes):
    """Per delta, the parser sees a few texts of bounded size, never the reply so far,
    so no reply can make one feed() long, however hostile its Markdown."""
    text = HOSTILE[name]
    renderer = StreamRenderer(keep_text=False)
    bound = 2 * HARD_LIMIT + REFS_LIMIT + 1024
    worst_chars = worst_calls = 0
    for i in range(0, len(text), 5):
        parsed_sizes.clear()
        renderer.feed(text[i:i + 5])
        worst_chars = max(worst_chars, sum(parsed_sizes))
        worst_calls = max(worst_calls, len(parsed_sizes))
    assert worst_calls <= 8, (name, worst_calls)
    assert worst_chars <= 4 * bound, (name, worst_chars)
    assert renderer.finish(text)  # and the whole reply still renders


def test_typesetting_per_rendering_is_bounded():
    protected, spans = math.protect("$x$ " * 5000)
    assert len(spans) == math.MAX_SPANS
    assert "$x$" in protected  # the rest stays text


def test_private_use_characters_in_text_survive_without_math():
    assert "\ue0a0" in render_markdown("prompt \ue0a0 main")
