"""chat/protocol.py's parse of a client frame: nesting is bounded before JSON is parsed."""
from __future__ import annotations

import json

import pytest

from chat import protocol
from chat.errors import ChatError

MAX_BYTES = 1_000_000


def refusal(text: str) -> ChatError:
    with pytest.raises(ChatError) as refused:
        protocol.parse_request(text, max_bytes=MAX_BYTES)
    return refused.value


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_nesting_past_the_limit_is_refused_before_json_is_parsed(monkeypatch, opening):
    closing = "]" if opening == "[" else "}"
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(protocol.json, "loads", lambda text: parsed.append(text) or real_loads(text))

    deep = opening * (protocol.MAX_NESTING + 1) + "1" + closing * (protocol.MAX_NESTING + 1)
    assert refusal(deep).code == "invalid_json"
    assert refusal("[" * 20000 + "]" * 20000).code == "invalid_json"
    assert parsed == []  # json.loads never recursed into them

    at_limit = opening * protocol.MAX_NESTING + "1" + closing * protocol.MAX_NESTING
    assert refusal(at_limit).code == "invalid_message"  # parsed: valid JSON, not a request
    assert parsed == [at_limit]


def test_brackets_inside_strings_are_text_not_nesting():
    content = '[{"quoted \\" [ bracket' + "[" * 5000 + "{" * 5000
    request = protocol.parse_request(json.dumps({"type": "message.send", "conversation": None, "content": content, "ref": "r1"}),
                                     max_bytes=MAX_BYTES)
    assert request.type == "message.send" and request.fields["content"] == content


def test_an_unterminated_string_full_of_brackets_is_invalid_json():
    assert refusal('{"type": "message.send", "content": "' + "[" * 100).code == "invalid_json"
