"""Structure and text of an HTML fragment, to compare two renderings of one Markdown text.

"Structurally equal" here means: the same elements in the same nesting with the same
text, attributes aside (classes, link targets, alignment), whitespace collapsed outside
`<pre>`. What this project adds by design is made transparent: the Pygments wrapper
`<div>` and token `<span>`s of code blocks, the MathML of typeset math (its LaTeX source
is compared instead), and the `md-cont` pieces of one long block (joined as the page's
stylesheet shows them).
"""
from __future__ import annotations

import html as htmllib
import re
from html.parser import HTMLParser

BLOCK_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "table",
    "thead", "tbody", "tr", "th", "td", "hr", "div", "math",
}
TRANSPARENT = {"div", "span"}
VOID = {"br", "hr", "input", "img"}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: list = ["#root", {}, []]
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = [tag, dict(attrs), []]
        self.stack[-1][2].append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1][2].append([tag, dict(attrs), []])

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1][2].append(data)


def _join_continuations(children: list) -> list:
    """A piece with class md-cont continues the element before it (same tag)."""
    out: list = []
    for child in children:
        if isinstance(child, list):
            child[2] = _join_continuations(child[2])
            classes = child[1].get("class", "") or ""
            prev = next((c for c in reversed(out) if not (isinstance(c, str) and not c.strip())), None)
            if "md-cont" in classes.split() and isinstance(prev, list) and prev[0] == child[0]:
                while out and out[-1] is not prev:
                    out.pop()
                _merge(prev, child)
                continue
        out.append(child)
    return out


def _merge(prev: list, cont: list) -> None:
    if prev[0] == "table":  # the continuation's rows go into the table's body
        body = next((c for c in prev[2] if isinstance(c, list) and c[0] == "tbody"), None)
        rows = [c for part in cont[2] if isinstance(part, list) for c in (part[2] if part[0] == "tbody" else [part])]
        if body is None:
            prev[2].append(["tbody", {}, rows])
        else:
            body[2].extend(rows)
    elif prev[0] == "div":  # code: the lines join the previous <pre><code>
        prev_code, cont_code = _innermost_code(prev), _innermost_code(cont)
        if prev_code is not None and cont_code is not None:
            texts = [c for c in _strings(prev_code)]
            joint = [] if texts and texts[-1].endswith("\n") else ["\n"]
            prev_code[2].extend([*joint, *cont_code[2]])
    elif prev[0] == "blockquote":  # a paragraph cut in two inside the quote joins again
        last = next((c for c in reversed(prev[2]) if isinstance(c, list)), None)
        first = next((c for c in cont[2] if isinstance(c, list)), None)
        rest = list(cont[2])
        if last is not None and first is not None and last[0] == first[0] == "p":
            rest.remove(first)
            last[2].extend([" ", *first[2]])
        prev[2].extend(rest)
    else:
        prev[2].extend([" ", *cont[2]])


def _strings(node: list) -> list[str]:
    out: list[str] = []
    for child in node[2]:
        out.extend([child] if isinstance(child, str) else _strings(child))
    return out


def _innermost_code(node: list) -> list | None:
    for child in node[2]:
        if isinstance(child, list):
            if child[0] == "code":
                return child
            found = _innermost_code(child)
            if found is not None:
                return found
    return None


def _emit(node, out: list[str], in_pre: bool) -> None:
    if isinstance(node, str):
        out.append(node if in_pre else re.sub(r"\s+", " ", node))
        return
    tag, attrs, children = node
    if tag == "math":  # typeset math: compare its TeX source
        out.append(f"<math>{_annotation(node).strip()}</math>")
        return
    if tag in TRANSPARENT:
        for child in children:
            _emit(child, out, in_pre)
        return
    out.append(f"<{tag}>")
    for child in children:
        _emit(child, out, in_pre or tag == "pre")
    if tag not in VOID:
        out.append(f"</{tag}>")


def _annotation(node) -> str:
    if isinstance(node, str):
        return ""
    if node[0] == "annotation":
        return "".join(c for c in node[2] if isinstance(c, str))
    return "".join(_annotation(c) for c in node[2])


def structure(html: str) -> str:
    """A canonical string of the fragment's elements and text (see the module doc)."""
    parser = _Tree()
    parser.feed(html)
    parser.close()
    root = parser.root
    root[2] = _join_continuations(root[2])
    out: list[str] = []
    for child in root[2]:
        _emit(child, out, False)
    text = "".join(out)
    # Whitespace next to a block tag is layout, not text; so is the last newline in a <pre>.
    blocks = "|".join(sorted(BLOCK_TAGS))
    text = re.sub(rf"\s*(</?(?:{blocks})>)\s*", r"\1", text)
    text = re.sub(r"\n</code></pre>", "</code></pre>", text)
    return htmllib.unescape(text).strip()
