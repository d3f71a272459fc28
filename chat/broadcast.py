"""Who hears what: channel-layer groups and the one event type sockets receive.

Every socket of a user is in `user.<id>`; every socket watching a conversation is
in `conversation.<id>`. An event carries the frame ready to send; the socket that
made the request (`origin`) gets the request's `ref` added.
"""
from __future__ import annotations

from channels.layers import get_channel_layer

from consumers import protocol


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def conversation_group(conversation_id: str) -> str:
    return f"conversation.{conversation_id}"


def frame_event(frame: dict, *, origin: str | None = None, ref: str | None = None, watchers: bool = False) -> dict:
    """The frame, encoded once for every socket that receives it."""
    event = {"type": "frame.send", "text": protocol.encode(frame), "conversation": frame.get("conversation"), "watchers": watchers}
    if isinstance(event["conversation"], dict):
        event["conversation"] = event["conversation"]["id"]
    if frame["type"] in ("reply.started", "reply.delta"):
        event["reply"] = frame["message"]
        event["seq"] = frame.get("seq", -1)
    if origin and ref is not None:
        event["origin"] = origin
        event["ref_text"] = protocol.encode({**frame, "ref": ref})
    return event


async def to_user(user_id: int, frame: dict, *, origin: str | None = None, ref: str | None = None) -> None:
    await get_channel_layer().group_send(user_group(user_id), frame_event(frame, origin=origin, ref=ref))


async def to_conversation(conversation_id: str, frame: dict, *, origin: str | None = None, ref: str | None = None) -> None:
    await get_channel_layer().group_send(
        conversation_group(conversation_id), frame_event(frame, origin=origin, ref=ref, watchers=True)
    )
