"""Joining a conversation mid-reply, and following the conversation a socket watches.

A socket that opens a conversation while a reply is being written must show the
reply so far and then every later delta, with no gap and nothing twice, although
the reply's task may run in another process. So it joins the conversation's group
first (no delta can slip by), loads the stored messages, and asks the reply's task
for a snapshot (`reply.snapshot_request` → `reply.snapshot`: the text so far and the
`seq` of the next delta). Live frames that come meanwhile are buffered; when the
snapshot arrives the socket sends `conversation.state` with it, then the buffered
frames the snapshot does not already hold, and from then on drops deltas older than
the snapshot (the floor). If no snapshot comes within CHAT_RESUME_TIMEOUT (the
reply just ended, or its process died) the socket reloads the stored state instead;
if the claim is still held then (a killed process whose claim is not stale yet), it
shows the reply's last checkpoint (chat/replies/claim.py) rather than drop the text
the tab showed, and reloads again when the claim can be recovered (issue 15).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from chat import conversations, events, fanout, protocol
from chat.blocking import run_blocking
from chat.models import Conversation
from chat.presenters import branch_dicts, conversation_dict
from chat.rendering import render_markdown
from chat.replies import claim


@dataclass
class Opening:
    """A conversation being opened; `reply_channel` is set when a reply is in progress."""

    row: Conversation
    messages: list[dict]  # rendered off the event loop: Markdown costs about 1 ms per KB
    reply_channel: str | None
    checkpoint: dict | None = None  # the claimed reply's last checkpoint, as `generating`
    stale_in: float = 0.0  # seconds until that claim can be recovered

    def state(self, generating: dict | None, ref: str | None = None) -> dict:
        return protocol.conversation_state(conversation_dict(self.row), self.messages, generating, ref)


async def open_conversation(row: Conversation) -> Opening:
    """The stored state of `row`, and whether a live reply must be joined (a dead one is recovered first)."""
    def load() -> Opening:
        row.refresh_from_db()
        if row.reply_message:
            claim.recover_if_stale(row)
        transcript = conversations.load_transcript(row)
        opening = Opening(row, branch_dicts(transcript), row.reply_channel or None)
        if row.reply_message:
            opening.checkpoint = {"message": row.reply_message, "model": row.reply_model, "content": row.reply_text,
                                  "html": render_markdown(row.reply_text), "tail": "", "seq": row.reply_seq}
            beat = row.reply_heartbeat or timezone.now()
            opening.stale_in = max(0.0, settings.CHAT_REPLY_STALE_SECONDS - (timezone.now() - beat).total_seconds())
        return opening

    return await run_blocking(load)


@dataclass
class _Joining:
    """A conversation opened mid-reply: live frames wait until the reply's snapshot comes."""

    opening: Opening
    ref: str | None
    token: object = field(default_factory=object)
    buffered: list[dict] = field(default_factory=list)
    timer: asyncio.Task | None = None  # held so that it is not garbage-collected


class ConversationFeed:
    """What one socket hears of the conversation it watches (one at a time: the page shows one)."""

    def __init__(self, socket: fanout.Member, send: Callable[[str], Awaitable[None]]):
        self.socket = socket  # the member of the conversation's group (chat/fanout.py)
        self.channel = socket.channel_name  # the socket's own channel: answers and snapshots name it
        self._send = send  # sends wire text on the socket
        self.watching: str | None = None
        self._joining: _Joining | None = None
        self._floor: tuple[str | None, int] = (None, 0)  # (reply, seq): older deltas are in the snapshot
        self._recheck: _Joining | None = None  # a silent reply shown from its checkpoint, reloaded when stale
        # Frames that came between `watch` and `show`, while the state was being read: they
        # follow the state, never precede it (fan-out calls `frame` directly, not through
        # the consumer's one-at-a-time receive loop).
        self._loading: list[dict] | None = None

    @property
    def expecting_answer(self) -> bool:
        """Whether something is due on the socket's channel: a snapshot, or a resume timer."""
        return self._joining is not None or self._recheck is not None

    async def watch(self, conversation_id: str) -> None:
        """Follow `conversation_id` instead of the conversation watched so far."""
        if self.watching == conversation_id:
            return
        await self.leave()
        self.watching, self._joining, self._recheck, self._loading = conversation_id, None, None, None
        await events.join(events.conversation_group(conversation_id), self.socket)

    async def open(self, conversation_id: str, load: Callable[[], Awaitable[Opening]], ref: str | None) -> None:
        """Watch `conversation_id`, read its state with `load()`, and send it: frames that
        come while it is read are held and follow the state (or go out as they are, if
        the state cannot be read: the error is the caller's to report)."""
        await self.watch(conversation_id)
        self._loading = []
        try:
            opening = await load()
        except BaseException:
            held, self._loading = self._loading or [], None
            for event in held:
                await self._send(self._text_for_me(event))
            raise
        await self.show(opening, ref)

    async def leave(self) -> None:
        if self.watching:
            await events.leave(events.conversation_group(self.watching), self.socket)

    async def show(self, opening: Opening, ref: str | None) -> None:
        """Send the opened conversation's state, joining its reply if one is being written.

        Called by `open`, which watches first and holds what comes while `opening` is read."""
        loaded_meanwhile, self._loading = self._loading or [], None
        if opening.reply_channel is None:
            await self._send(events.encode(opening.state(None, ref)))
            for event in loaded_meanwhile:
                await self._send(self._text_for_me(event))
            return
        self._joining = joining = _Joining(opening, ref, buffered=loaded_meanwhile)
        await events.request_snapshot(opening.reply_channel, self.channel, opening.row.pk)
        joining.timer = asyncio.create_task(self._expire(joining.token))

    async def frame(self, event: dict) -> None:
        """`frame.send`: deliver a fanned-out frame unless this socket already has it or must wait."""
        text = self.admit(event)
        if text is not None:
            await self._send(text)

    def admit(self, event: dict) -> str | None:
        """The wire text of a fanned-out frame (`frame.send`) that this socket must send now,
        or None: it has the frame already, or holds it until the state or snapshot is out.
        Plain code, not a coroutine: the consumer calls it for every frame of every tab."""
        if event.get("watchers"):
            if event["conversation"] != self.watching:
                return None  # an event still in flight from a conversation this socket left
            if self._loading is not None:
                self._loading.append(event)
                return None
            if self._joining is not None:
                self._joining.buffered.append(event)
                return None
            if event.get("reply") is not None and event["reply"] == self._floor[0] and event["seq"] < self._floor[1]:
                return None  # sent before the snapshot this socket resumed from, which holds it already
        return self._text_for_me(event)

    def _text_for_me(self, event: dict) -> str:
        """The frame's wire text as this socket gets it: with the `ref` if it asked for it."""
        return event["ref_text"] if event.get("origin") == self.channel else event["text"]

    async def snapshot(self, event: dict) -> None:
        """`reply.snapshot`: the reply so far; send the state with it, then what was buffered after it."""
        joining = self._joining
        if joining is None or event["conversation"] != self.watching:
            return
        self._joining = None
        generating = event["generating"]
        self._floor = (generating["message"], generating["seq"])
        await self._send(events.encode(joining.opening.state(generating, joining.ref)))
        for buffered in joining.buffered:
            if buffered.get("reply") == generating["message"] and buffered.get("seq", -1) < generating["seq"]:
                continue  # already part of the snapshot (reply.started carries seq -1)
            await self._send(buffered["text"])

    async def expired(self, event: dict) -> None:
        """`resume.expired`: the reply's task did not answer (it just ended, or its process died),
        or a claim shown from its checkpoint can now be recovered: reload."""
        joining, recheck = self._joining, self._recheck
        if joining is not None and id(joining.token) == event["token"]:
            self._joining = None
            await self._reload(joining)
        elif recheck is not None and id(recheck.token) == event["token"]:
            self._recheck = None
            await self._reload(_Joining(recheck.opening, None))

    async def _reload(self, joining: _Joining) -> None:
        opening = await open_conversation(joining.opening.row)
        generating = opening.checkpoint
        if generating is None:
            await self._send(events.encode(opening.state(None, joining.ref)))
            for buffered in joining.buffered:
                if buffered.get("seq") is None and buffered.get("reply") is None:
                    await self._send(buffered["text"])
            return
        # Still claimed, and silent: its process was killed (or lost our request). Show the
        # text it checkpointed; deltas after it still apply if the reply is alive after all.
        self._floor = (generating["message"], generating["seq"])
        await self._send(events.encode(opening.state(generating, joining.ref)))
        for buffered in joining.buffered:
            if buffered.get("reply") == generating["message"] and buffered.get("seq", -1) < generating["seq"]:
                continue
            await self._send(buffered["text"])
        self._recheck = recheck = _Joining(opening, None)
        recheck.timer = asyncio.create_task(self._expire(recheck.token, opening.stale_in + 0.1))

    async def _expire(self, token: object, delay: float | None = None) -> None:
        await asyncio.sleep(settings.CHAT_RESUME_TIMEOUT if delay is None else delay)
        if any(pending is not None and pending.token is token for pending in (self._joining, self._recheck)):
            # Only while it is still awaited: the socket reads its channel only then.
            await events.expire_resume(self.channel, id(token))
