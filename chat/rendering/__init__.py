"""Markdown (CommonMark + GitHub Flavored Markdown + LaTeX math) to sanitized HTML, at
once and incrementally while a reply streams. See docs/rendering.md.

- `render_markdown(text) -> str`: the whole text.
- `StreamRenderer(keep_text=True)`: `.feed(delta) -> {"append": html, "tail": html}`,
  `.finish(text=None) -> html`; bounded work and bytes per delta.
"""
from __future__ import annotations

from chat.rendering.html import CONT_CLASS, fragment
from chat.rendering.stream import StreamRenderer

__all__ = ["render_markdown", "StreamRenderer", "CONT_CLASS"]


def render_markdown(text: str) -> str:
    """Render untrusted Markdown to sanitized HTML (the whole text at once)."""
    return fragment(text.replace("\r\n", "\n").replace("\r", "\n"))
