"""Text from the server made safe to print on a terminal.

A model's reply, a title or another user's words may carry terminal control
sequences: OSC 0/2 sets the window title, OSC 52 writes the clipboard, OSC 8 hides
a link behind text, CSI moves the cursor and erases lines, and a bare carriage
return or backspace overwrites what is already shown, so a reply could forge a line
that looks like the client's own output. `printable` removes every escape sequence
(7-bit and 8-bit forms) and every other control character, keeping newlines and tabs.

It is safe per streamed chunk: a sequence cut between two chunks loses its ESC in the
first, and what reaches the second is plain text.
"""
from __future__ import annotations

import re

# ESC or an 8-bit C1 introducer, then: CSI parameters and final byte; or an OSC / DCS /
# SOS / PM / APC string up to BEL or ST (or the end of the chunk); or one more byte.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
# What is left of the C0 controls (but newline and tab), DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without escape sequences and control characters, `\\n` and `\\t` kept."""
    return _CONTROL.sub("", _SEQUENCE.sub("", text.replace("\r\n", "\n")))
