"""Everything that travels over the channel layer, and who hears it.

Every socket of a user is in `user.<id>`; every socket watching a conversation is
in `conversation.<id>` (groups of chat/fanout.py: this process's sockets are called
directly, other processes' through the channel layer). Sockets receive one event
type, `frame.send`, carrying a frame already encoded: this module is the only place a
frame is turned into wire text, once per event and not once per socket. The other events are the control
messages of a running reply (stop, snapshot request and answer, close) and the
resume timer of a socket; docs/architecture.md lists them all with their fields.
"""
from __future__ import annotations

import json
from typing import Any

from channels.layers import get_channel_layer

from chat import fanout, protocol
from chat.models import Conversation
from chat.presenters import conversation_dict
from chat.wire import SharedText

# The channel-layer event types (health.ping, chat/health.py's round trip, is the seventh).
FRAME_SEND = "frame.send"  # group fan-out → sockets
REPLY_STOP = "reply.stop"  # a socket → a reply's control channel
REPLY_SNAPSHOT_REQUEST = "reply.snapshot_request"  # a joining socket → a reply's control channel
REPLY_SNAPSHOT = "reply.snapshot"  # a reply → the joining socket
REPLY_CLOSED = "reply.closed"  # a reply → its own control channel, to end the listener between two reads
RESUME_EXPIRED = "resume.expired"  # a socket → itself, when a snapshot did not come in time


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def conversation_group(conversation_id: str) -> str:
    return f"conversation.{conversation_id}"


async def join(group: str, socket: fanout.Member) -> None:
    await fanout.join(group, socket)


async def leave(group: str, socket: fanout.Member) -> None:
    await fanout.leave(group, socket)


# One encoder for every frame: json.dumps with these options builds a new one per call,
# half of the cost of encoding a reply's delta.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(frame: dict[str, Any]) -> str:
    """A frame as sent on the socket: compact JSON, UTF-8 as is."""
    return _ENCODER.encode(frame)


# --- Fan-out of frames to sockets ---------------------------------------------


def frame_event(frame: dict, *, origin: str | None = None, ref: str | None = None, watchers: bool = False) -> dict:
    """The frame, encoded once for every socket that receives it.

    `conversation` (an id), and for reply frames `reply` and `seq`, let a socket
    drop what it already has without decoding the text (chat/resume.py). The
    socket that asked (`origin`) gets `ref_text`, the frame with the request's `ref`.
    """
    event = {"type": FRAME_SEND, "text": encode(frame), "conversation": frame.get("conversation"), "watchers": watchers}
    if isinstance(event["conversation"], dict):
        event["conversation"] = event["conversation"]["id"]
    if frame["type"] in ("reply.started", "reply.delta"):
        event["reply"] = frame["message"]
        event["seq"] = frame.get("seq", -1)
    if origin and ref is not None:
        event["origin"] = origin
        event["ref_text"] = encode({**frame, "ref": ref})
    return event


async def to_user(user_id: int, frame: dict, *, origin: str | None = None, ref: str | None = None) -> None:
    """A sidebar frame for every socket of the user: framed and compressed once for them
    all (chat/wire.py), which the many tabs of one user would otherwise pay each."""
    event = frame_event(frame, origin=origin, ref=ref)
    event["text"] = SharedText(event["text"])
    await fanout.send(user_group(user_id), event)


async def to_conversation(conversation_id: str, frame: dict, *, origin: str | None = None, ref: str | None = None) -> None:
    await fanout.send(conversation_group(conversation_id), frame_event(frame, origin=origin, ref=ref, watchers=True))


async def to_user_sockets(user_id: int, event: dict) -> None:
    """An event other than a frame (e.g. `credentials.withdrawn`) for every socket of the user.
    Rare, and sent from code outside the server's loop too (`async_to_sync`, which ends its
    loop on return): so it returns once the event is on its way to the other processes."""
    await fanout.send(user_group(user_id), event, published=True)


# --- What every tab hears about a conversation ---------------------------------------


async def conversation_created(row: Conversation, *, origin: str | None = None, ref: str | None = None) -> None:
    await to_user(row.owner_id, protocol.conversation_created(conversation_dict(row)), origin=origin, ref=ref)


async def conversation_updated(row: Conversation, *, origin: str | None = None, ref: str | None = None) -> None:
    await to_user(row.owner_id, protocol.conversation_updated(conversation_dict(row)), origin=origin, ref=ref)


async def conversation_deleted(user_id: int, conversation_id: str, *, origin: str | None = None,
                               ref: str | None = None) -> None:
    await to_user(user_id, protocol.conversation_deleted(conversation_id), origin=origin, ref=ref)


async def message_created(row: Conversation, message: dict, *, origin: str | None = None, ref: str | None = None) -> None:
    await to_conversation(row.pk, protocol.message_created(row.pk, message), origin=origin, ref=ref)


async def conversation_state(row: Conversation, messages: list[dict], *, origin: str | None = None,
                             ref: str | None = None) -> None:
    """The whole active branch to every watcher (after a branch switch); no reply is running."""
    state = protocol.conversation_state(conversation_dict(row), messages, None)
    await to_conversation(row.pk, state, origin=origin, ref=ref)


# --- Control events of a running reply -----------------------------------------


async def new_reply_channel() -> str:
    """A control channel for a new reply.

    The default prefix matters with Redis: every process-local channel must share
    one real channel, or one blocking receive starves the others."""
    return await get_channel_layer().new_channel()


async def request_stop(reply_channel: str) -> None:
    await get_channel_layer().send(reply_channel, {"type": REPLY_STOP})


async def request_snapshot(reply_channel: str, reply_to: str, conversation_id: str) -> None:
    await get_channel_layer().send(reply_channel, {"type": REPLY_SNAPSHOT_REQUEST, "reply_to": reply_to,
                                                   "conversation": conversation_id})


async def send_snapshot(reply_to: str, conversation_id: str, generating: dict) -> None:
    await get_channel_layer().send(reply_to, {"type": REPLY_SNAPSHOT, "conversation": conversation_id,
                                              "generating": generating})


async def close_control(reply_channel: str) -> None:
    await get_channel_layer().send(reply_channel, {"type": REPLY_CLOSED})


async def expire_resume(socket_channel: str, token: int) -> None:
    await get_channel_layer().send(socket_channel, {"type": RESUME_EXPIRED, "token": token})
