"""Frames on the wire (chat/events.py `encode`): compact JSON, non-ASCII text as it is,
the same text whatever was encoded before (one encoder serves every frame)."""
from __future__ import annotations

import json

from chat import events


def test_frames_are_compact_json_with_text_as_it_is():
    frame = {"type": "reply.delta", "conversation": "c1", "seq": 3, "delta": " héllo — 世界 🙂",
             "html": {"append": "<p>a &amp; b</p>", "tail": "<p>\"q\"\n</p>"}}
    text = events.encode(frame)
    assert text == ('{"type":"reply.delta","conversation":"c1","seq":3,"delta":" héllo — 世界 🙂",'
                    '"html":{"append":"<p>a &amp; b</p>","tail":"<p>\\"q\\"\\n</p>"}}')
    assert json.loads(text) == frame


def test_encoding_one_frame_does_not_change_the_next():
    first = events.encode({"type": "pong", "ref": None})
    events.encode({"type": "error", "code": "too_large", "message": "x" * 10_000, "retry_after": 1.5})
    assert events.encode({"type": "pong", "ref": None}) == first == '{"type":"pong","ref":null}'
