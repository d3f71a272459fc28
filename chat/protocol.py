"""The WebSocket protocol's message types, version 1 (see docs/protocol.md).

Client frames are parsed and validated here, into a `Request`; server frames are
built here, one function per type. Nothing else in the project writes a frame by
hand, so the message types live in one place; `chat/events.py` encodes them for
the wire. A bad frame raises `ChatError`, like any other request that fails.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from chat.errors import ChatError

PROTOCOL_VERSION = 1
MAX_REF_CHARS = 64
MAX_NESTING = 64  # arrays and objects within each other; no request needs more than 3
MAX_ID_CHARS = 64
MAX_QUERY_CHARS = 200


# Field kinds: "id" a non-empty id string, "id?" an id or null, "text" a string,
# "bool" true or false. `required` fields must be present.
_ID, _ID_OR_NULL, _TEXT, _BOOL = "id", "id?", "text", "bool"

REQUEST_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "conversation.open": {"conversation": (_ID, True)},
    "message.send": {"conversation": (_ID_OR_NULL, True), "content": (_TEXT, True), "model": (_ID, False)},
    "message.edit": {"conversation": (_ID, True), "message": (_ID, True), "content": (_TEXT, True)},
    "message.regenerate": {"conversation": (_ID, True)},
    "message.continue": {"conversation": (_ID, True), "message": (_ID, False)},
    "branch.switch": {"conversation": (_ID, True), "message": (_ID, True)},
    "generation.stop": {"conversation": (_ID, True)},
    "conversation.configure": {"conversation": (_ID, True), "model": (_ID, False), "system_prompt": (_TEXT, False)},
    "conversation.rename": {"conversation": (_ID, True), "title": (_TEXT, True)},
    "conversation.delete": {"conversation": (_ID, True)},
    "conversation.share": {"conversation": (_ID, True)},
    "conversation.unshare": {"conversation": (_ID, True)},
    "conversation.search": {"query": (_TEXT, True)},
    # Additions to version 1 (docs/protocol.md): organising the sidebar, and the share link again.
    "conversation.pin": {"conversation": (_ID, True), "pinned": (_BOOL, False)},
    "conversation.archive": {"conversation": (_ID, True), "archived": (_BOOL, False)},
    "conversation.share_link": {"conversation": (_ID, True)},
    "ping": {},
}


@dataclass
class Request:
    type: str
    ref: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.fields.get(name)

    @property
    def handler_name(self) -> str:
        """`message.send` is handled by `message_send`, as Channels names its handlers."""
        return self.type.replace(".", "_")


# A JSON string (skipped whole: brackets inside it are text), or a bracket.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nested_deeper(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` deep.

    Why not let `json.loads` find out: it recurses once per level, in C, and only fails
    at the interpreter's recursion limit (~1,000 levels). Its lists are allocated all the
    way down, so garbage collection may run there, and any finalizer it calls has no
    stack left: its error is lost (printed as "Exception ignored"), whatever it was
    cleaning up. Counting first costs two `str.count` calls for any frame with few
    brackets, which is every request the protocol has."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _STRUCTURE.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def parse_request(text: str | None, *, max_bytes: int) -> Request:
    """Parse one client frame; raise ChatError with a stable code when it is bad."""
    if text is None:
        raise ChatError("invalid_message", "Frames must be JSON text, not binary.")
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ChatError("too_large", f"Frames are limited to {max_bytes} bytes.")
    if _nested_deeper(text, MAX_NESTING):
        raise ChatError("invalid_json", f"The frame nests arrays or objects more than {MAX_NESTING} deep.")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ChatError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ChatError("invalid_message", "A frame must be a JSON object.")
    ref = data.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_CHARS or not _is_unicode(ref)):
        raise ChatError("invalid_message", f"`ref` must be a string of at most {MAX_REF_CHARS} characters.")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ChatError("invalid_message", "A frame needs a string `type`.", ref=ref)
    if kind not in REQUEST_FIELDS:
        raise ChatError("invalid_message", f"Unknown frame type {kind[:40]!r}.", ref=ref)
    fields = {}
    for name, (kind_of_field, required) in REQUEST_FIELDS[kind].items():
        if name not in data:
            if required:
                raise ChatError("invalid_message", f"`{kind}` needs the field `{name}`.", ref=ref)
            continue
        fields[name] = _check_field(kind, name, kind_of_field, data[name], ref)
    return Request(type=kind, ref=ref, fields=fields)


def _check_field(frame_type: str, name: str, kind: str, value: Any, ref: str | None) -> Any:
    if kind == _ID_OR_NULL and value is None:
        return None
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise ChatError("invalid_message", f"`{name}` in `{frame_type}` must be true or false.", ref=ref)
        return value
    if kind in (_ID, _ID_OR_NULL):
        if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not _is_unicode(value):
            raise ChatError("invalid_message", f"`{name}` in `{frame_type}` must be an id string.", ref=ref)
        return value
    if not isinstance(value, str) or not _is_unicode(value):
        raise ChatError("invalid_message",
                        f"`{name}` in `{frame_type}` must be a string of valid Unicode without NUL characters.", ref=ref)
    return value


def _is_unicode(text: str) -> bool:
    """False for a lone surrogate, which valid JSON can carry as an escape ("\\ud83d", a
    string cut in the middle of an emoji) but no store, database or socket can encode;
    and for NUL ("\\u0000"), which PostgreSQL refuses in text and JSON columns."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- Server frames ----------------------------------------------------------


def _with_ref(frame: dict[str, Any], ref: str | None) -> dict[str, Any]:
    if ref is not None:
        frame["ref"] = ref
    return frame


def hello(user: dict, models: list[dict], conversations: list[dict], limits: dict, usage: dict,
          preferences: dict, archived: list[dict] | None = None) -> dict:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "user": user,
        "models": models,
        "conversations": conversations,  # the sidebar: pinned first, then newest first; no archived ones
        "archived": archived or [],  # an addition: the archived conversations, newest first
        "limits": limits,
        "usage": usage,  # today's hosted-model budget (chat/quotas.py)
        "preferences": preferences,  # what a new chat starts from (chat/preferences.py)
    }


def error(code: str, message: str, ref: str | None = None, retry_after: float | None = None) -> dict:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return _with_ref(frame, ref)


def pong(ref: str | None = None) -> dict:
    return _with_ref({"type": "pong"}, ref)


def conversation_state(conversation: dict, messages: list[dict], generating: dict | None, ref=None) -> dict:
    return _with_ref(
        {"type": "conversation.state", "conversation": conversation, "messages": messages, "generating": generating},
        ref,
    )


def conversation_created(conversation: dict, ref: str | None = None) -> dict:
    return _with_ref({"type": "conversation.created", "conversation": conversation}, ref)


def conversation_updated(conversation: dict, ref: str | None = None) -> dict:
    return _with_ref({"type": "conversation.updated", "conversation": conversation}, ref)


def conversation_deleted(conversation_id: str, ref: str | None = None) -> dict:
    return _with_ref({"type": "conversation.deleted", "conversation": conversation_id}, ref)


def conversation_shared(conversation_id: str, url: str | None, ref: str | None = None) -> dict:
    return _with_ref({"type": "conversation.shared", "conversation": conversation_id, "url": url}, ref)


def search_results(query: str, results: list[dict], ref: str | None = None) -> dict:
    return _with_ref({"type": "search.results", "query": query, "results": results}, ref)


def message_created(conversation_id: str, message: dict, ref: str | None = None) -> dict:
    return _with_ref({"type": "message.created", "conversation": conversation_id, "message": message}, ref)


def reply_started(conversation_id: str, message_id: str, parent: str, model: str, *, continues: bool = False,
                  content: str = "", html: dict | None = None) -> dict:
    """A reply begins; `continues` marks a stored reply written on in place (`content` and
    `html` are its text so far, which the deltas, numbered from 0 again, extend)."""
    frame = {"type": "reply.started", "conversation": conversation_id, "message": message_id, "parent": parent,
             "model": model}
    if continues:
        frame.update(continues=True, content=content, html=html or {"append": "", "tail": ""})
    return frame


def reply_waiting(conversation_id: str, message_id: str, ahead: int) -> dict:
    """The reply waits for the local model: `ahead` generations run before it (0: it has started)."""
    return {"type": "reply.waiting", "conversation": conversation_id, "message": message_id, "ahead": ahead}


def reply_delta(conversation_id: str, message_id: str, seq: int, delta: str, html: dict) -> dict:
    return {"type": "reply.delta", "conversation": conversation_id, "message": message_id, "seq": seq, "delta": delta, "html": html}


def reply_completed(conversation_id: str, message: dict, stopped: bool) -> dict:
    return {"type": "reply.completed", "conversation": conversation_id, "message": message, "stopped": stopped}


def reply_failed(conversation_id: str, message: dict, code: str, text: str, retry_after: float | None = None) -> dict:
    failure: dict[str, Any] = {"code": code, "message": text}
    if retry_after is not None:
        failure["retry_after"] = retry_after
    return {"type": "reply.failed", "conversation": conversation_id, "message": message, "error": failure}
