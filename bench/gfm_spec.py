"""The GFM specification's examples (github/cmark-gfm, test/spec.txt), read at bench time.

The spec is not part of this project: point GFM_SPEC at a copy of `test/spec.txt`
(default: the mirror the bench machine keeps of github/cmark-gfm). Only the sections
that models write are used; examples with raw HTML or images are left aside (raw HTML
is escaped and images dropped here by design).
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIRROR = Path("/work/.mirror/github+cmark-gfm/repo/.git")

SECTIONS = {
    "lists": ("Lists",),
    "list items": ("List items",),
    "tables": ("Tables (extension)",),
    "task lists": ("Task list items (extension)",),
    "strikethrough": ("Strikethrough (extension)",),
    "autolinks": ("Autolinks", "Autolinks (extension)"),
    "fenced code": ("Fenced code blocks",),
    "code": ("Code spans", "Indented code blocks"),
    "emphasis": ("Emphasis and strong emphasis",),
    "links": ("Links",),
    "headings": ("ATX headings", "Setext headings"),
    "block quotes": ("Block quotes",),
    "line breaks": ("Hard line breaks", "Soft line breaks"),
}
_FENCE = "`" * 32
_RAW_HTML = re.compile(r"<(?:/|!|\?)?[A-Za-z][A-Za-z0-9-]*(?:\s|/?>)|<!--|<\?")


@dataclass
class Example:
    group: str
    number: int
    markdown: str
    html: str


def spec_text() -> str:
    path = os.environ.get("GFM_SPEC")
    if path:
        return Path(path).read_text(encoding="utf-8")
    if not MIRROR.exists():
        raise RuntimeError(f"No GFM spec: set GFM_SPEC to a copy of cmark-gfm's test/spec.txt (no mirror at {MIRROR})")
    return subprocess.run(["git", "--git-dir", str(MIRROR), "show", "HEAD:test/spec.txt"],
                          check=True, capture_output=True, text=True).stdout


def examples(text: str | None = None) -> list[Example]:
    """The examples of SECTIONS, without raw HTML or images."""
    group_of = {name: group for group, names in SECTIONS.items() for name in names}
    out, section, number = [], "", 0
    lines = (text or spec_text()).split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## ") or line.startswith("# "):
            section = line.lstrip("#").strip()
        if line.startswith(_FENCE + " example"):
            number += 1
            j = lines.index(".", i + 1)
            k = lines.index(_FENCE, j + 1)
            markdown = "\n".join(lines[i + 1:j]).replace("→", "\t")
            html = "\n".join(lines[j + 1:k]).replace("→", "\t")
            markdown = markdown + "\n" if markdown else ""
            group = group_of.get(section)
            if group and not _RAW_HTML.search(markdown) and "![" not in markdown and "<img" not in html:
                out.append(Example(group, number, markdown, html))
            i = k
        i += 1
    return out
