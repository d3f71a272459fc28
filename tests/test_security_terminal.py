"""Issue 16, item 10: the terminal client never prints a control sequence from the server."""
from __future__ import annotations

import io

import pytest

from chat.client import terminal as client
from chat.client.printable import printable

HOSTILE = {
    "window title (OSC 0)": ("before\x1b]0;pwned\x07after", "beforeafter"),
    "clipboard (OSC 52, ST-terminated)": ("\x1b]52;c;cm0gLXJmIH4=\x1b\\ok", "ok"),
    "hidden link (OSC 8)": ("\x1b]8;;https://evil.example\x1b\\docs\x1b]8;;\x1b\\", "docs"),
    "colour and erase (CSI)": ("\x1b[2J\x1b[31mred\x1b[0m", "red"),
    "8-bit CSI": ("\x9b2Jz", "z"),
    "forged line (carriage return)": ("4 + 4 = 8\r2 + 2 = 5", "4 + 4 = 82 + 2 = 5"),
    "backspaces": ("rm -rf\x08\x08\x08\x08\x08\x08ls", "rm -rfls"),
    "reset (ESC c)": ("\x1bcx", "x"),
}


@pytest.mark.parametrize("text, expected", HOSTILE.values(), ids=HOSTILE.keys())
def test_control_sequences_are_removed(text, expected):
    assert printable(text) == expected


def test_ordinary_text_newlines_and_tabs_are_kept():
    text = "Café 日本語 🙂\n\tindented\r\nnext line ~ [link](x) ^caret"
    assert printable(text) == text.replace("\r\n", "\n")


def test_a_sequence_split_between_streamed_deltas_is_never_whole():
    deltas = ["title: \x1b", "]0;pwned\x07", " done"]
    shown = "".join(printable(delta) for delta in deltas)
    assert "\x1b" not in shown and "\x07" not in shown


def test_streamed_reply_and_printed_branch_carry_no_escape(capsys):
    out = io.StringIO()
    client._write(out, "hi \x1b]52;c;ZXZpbA==\x07there")
    assert out.getvalue() == "hi there"
    client.print_branch({"messages": [{"role": "assistant", "content": "\x1b[2Kforged", "status": "complete"}],
                         "generating": {"content": "\x1b]0;t\x07x"}})
    printed = capsys.readouterr().out
    assert printed == "assistant: forged\nassistant [writing]: x\n"
