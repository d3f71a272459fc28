"""What a socket can ask for, one async function per request.

The consumer parses a frame and calls one of these; they validate, store, claim
and announce (chat/events.py), and return what answers the asking socket, for the
consumer to put in a frame: this module builds no frames. Blocking work (database,
transcript store) runs in threads via `chat.blocking.run_blocking`.
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from chat import conversations, events, preferences, protocol, quotas, sharing
from chat import search as search_index
from chat.backends import ModelError, available_models, get_backend
from chat.blocking import run_blocking
from chat.errors import ChatError, not_found
from chat.models import Conversation
from chat.presenters import branch_dicts, conversation_dict, message_dict
from chat.ratelimit import SlidingWindowLimiter
from chat.replies import claim
from chat.replies.task import ReplyTask
from chat.resume import open_conversation  # noqa: F401 (a request like the others; the joining is resume's)
from chat.transcript import CONTINUABLE_STATUSES, Message, Transcript, new_message_id

_reply_limiter = SlidingWindowLimiter("replies")
T = TypeVar("T")


def limits() -> dict:
    return {
        "max_content_chars": settings.CHAT_MAX_CONTENT_CHARS,
        "max_frame_bytes": settings.CHAT_MAX_FRAME_BYTES,
        "max_title_chars": settings.CHAT_MAX_TITLE_CHARS,
        "max_system_prompt_chars": settings.CHAT_MAX_SYSTEM_PROMPT_CHARS,
        "frames_per_window": settings.CHAT_RATE_LIMIT_FRAMES,
        "frame_window_seconds": settings.CHAT_RATE_LIMIT_WINDOW,
        "replies_per_minute": settings.CHAT_RATE_LIMIT_MESSAGES,
    }


async def hello(user) -> dict:
    """What a new socket is told first: the fields of the `hello` frame.

    Gathered in one worker-thread call: a handshake's database reads are its main cost
    (bench/connections.py), and each separate hop to a thread adds its own overhead."""
    return await run_blocking(_hello, user)


def _hello(user) -> dict:
    rows, archived = conversations.sidebar_and_archived(user)
    return {
        "user": {"id": user.pk, "username": user.get_username()},
        "models": [model.as_dict() for model in available_models()],
        "conversations": [conversation_dict(row) for row in rows],
        "archived": [conversation_dict(row) for row in archived],
        "limits": limits(),
        "usage": quotas.usage(user),  # today's hosted-model budget (chat/quotas.py)
        "preferences": preferences.for_hello(user),  # what a new chat starts from
    }


# --- Opening a conversation ---------------------------------------------------------


async def get_row(user, conversation_id: str) -> Conversation:
    """The user's conversation, or ChatError("not_found") (also for another user's)."""
    return await run_blocking(conversations.get_row, user, conversation_id)

# open_conversation(row), imported above from chat/resume.py: the stored state, and the
# channel of the reply being written, if any.


# --- Starting replies -------------------------------------------------------------


@dataclass
class Turn:
    """A stored user message (or regenerate request) whose reply is ready to start."""

    row: Conversation
    reply: ReplyTask
    created: bool = False
    user_message: dict | None = None
    origin: str | None = None
    ref: str | None = None

    @property
    def conversation_id(self) -> str:
        return self.row.pk

    async def begin(self) -> Turn:
        """Send the model its request before the turn's frames are made (ReplyTask.begin_stream),
        and let that request go out now; `start()` must follow."""
        self.reply.begin_stream()
        await asyncio.sleep(0)  # the stream task runs until it waits for the model's answer
        return self

    async def start(self) -> None:
        """Tell every tab, then hand the reply to its own task."""
        if self.created:
            await events.conversation_created(self.row, origin=self.origin, ref=self.ref)
        if self.user_message is not None:
            await events.message_created(self.row, self.user_message, origin=self.origin, ref=self.ref)
        if not self.created:  # updated_at moved (and maybe the model): every sidebar reorders
            await events.conversation_updated(self.row, origin=self.origin, ref=self.ref)
        self.reply.start()


def _check_content(content: str) -> str:
    if not content.strip():
        raise ChatError("invalid_message", "A message cannot be empty.")
    if len(content) > settings.CHAT_MAX_CONTENT_CHARS:
        raise ChatError("too_large", f"Messages are limited to {settings.CHAT_MAX_CONTENT_CHARS} characters.")
    return content


def _check_model(model_id: str) -> str:
    try:
        get_backend(model_id)
    except ModelError as error:
        raise ChatError(error.code, error.message, error.retry_after) from None
    return model_id


async def _check_reply_rate(user) -> None:
    wait = await _reply_limiter.hit(user.pk, settings.CHAT_RATE_LIMIT_MESSAGES, 60.0)
    if wait is not None:
        raise ChatError("rate_limited", f"You are sending messages too fast; try again in {wait:.0f} s.", wait)


def _check_room(user, model_id: str) -> None:
    """The local model's per-user cap, checked before anything is stored: a user with too
    many replies already waiting for it is told so plainly (`busy`), and nothing changes."""
    try:
        check = getattr(get_backend(model_id), "check_room", None)
    except ModelError:
        return  # an unavailable model is reported by the reply itself, as before
    if check is None:
        return
    try:
        check(user.pk)
    except ModelError as error:
        raise ChatError(error.code, error.message, error.retry_after) from None


def _busy() -> ChatError:
    return ChatError("busy", "A reply is still being written in this conversation.")


async def send_message(user, conversation_id: str | None, content: str, model: str | None,
                       *, origin: str | None = None, ref: str | None = None) -> Turn:
    _check_content(content)
    if conversation_id is None:
        model = _check_model(model or await run_blocking(preferences.default_model_for, user))
        await _check_reply_rate(user)
        _check_room(user, model)
        return await _start_new_conversation(user, content, model, origin, ref)
    # Counted before the conversation is read (in the same worker call as the write): a
    # send to a conversation that is not found counts against the rate limit too.
    await _check_reply_rate(user)
    message_id = new_message_id()  # known before the write: the claim records it as the reply's parent

    def prepare(row: Conversation) -> tuple[str, Callable[[Transcript], Message]]:
        switch_model = model is not None and model != row.model
        if switch_model:
            _check_model(model)
        charged = model if switch_model else row.model
        _check_room(user, charged)

        def add_user_message(transcript: Transcript) -> Message:
            if switch_model:  # in the same write as the message: a refused (busy) send changes nothing
                transcript.model = model
            leaf = transcript.active_branch()[-1].id if transcript.active_leaf else None
            return transcript.add_message(leaf, "user", content, message_id=message_id)

        return charged, add_user_message

    return await _charged_turn(user, conversation_id, prepare, origin, ref, parent_id=message_id)


async def _start_new_conversation(user, content: str, model: str, origin, ref) -> Turn:
    channel = await events.new_reply_channel()
    reply_id = secrets.token_hex(8)
    index_later: list[Callable[[], None]] = []

    def hold(row: Conversation, message: Message) -> None:  # created claimed: no other reply can start first
        claim.hold_new(row, reply_id, message.id, model, channel)

    row, transcript, message = await run_blocking(_charged(conversations.create_conversation), user, model,
                                                  user, model, content, before_insert=hold, index_later=index_later)
    task = _reply_task(row, reply_id, channel, transcript, message, index_later)
    turn = await Turn(row, task, created=True, origin=origin, ref=ref).begin()
    turn.user_message = message_dict(transcript, message)
    return turn


def _reply_task(row: Conversation, reply_id: str, channel: str, transcript: Transcript, parent: Message,
                index_later: list[Callable[[], None]]) -> ReplyTask:
    """The reply to `parent`; it titles the conversation if it is the first exchange of an
    untitled one, and runs the turn's deferred search index after its first delta."""
    branch = transcript.active_branch()
    needs_title = not transcript.title and sum(1 for m in branch if m.role == "user") == 1
    return ReplyTask(row=row, reply_id=reply_id, parent_id=parent.id, model=row.model,
                     model_messages=transcript.model_messages(), channel=channel,
                     title_from=branch[0].content if needs_title else None, user=row.owner_id,
                     after_first_delta=index_later)


# What a turn checks once its conversation's row is read, in the worker call that starts it
# (`_charged_turn`): the model to charge and the change to store.
Prepare = Callable[[Conversation], tuple[str, Callable[[Transcript], Message]]]


class _ModelChanged(Exception):
    """Another tab switched the conversation's model between the charge and the write."""


MODEL_CHANGE_RETRIES = 3


async def _charged_turn(user, conversation_id: str, prepare: Prepare, origin, ref, *,
                        announce_user_message: bool = True, parent_id: str = "") -> Turn:
    """Read the conversation, charge the model that will run, then claim and store: one
    worker-thread call (`_load_charge_claim_store`).

    `prepare(row)`, run there once the row is read, checks what depends on it and returns
    the model to charge and the change to store (`mutate(transcript)`, which returns the
    message the reply answers). The budget is counted before the write, but a
    `conversation.configure` from another tab can switch the model in between; the reply
    runs on the model of the write. So the write itself checks that its model is the
    charged one (atomically, inside the store's conditional write), and on a mismatch
    nothing is written, the charge is given back and the turn starts over on the row as
    it is now.

    `parent_id`, the id `mutate` gives the user message, if known before the write.
    """
    for _ in range(MODEL_CHANGE_RETRIES):
        channel = await events.new_reply_channel()
        reply_id = secrets.token_hex(8)
        index_later: list[Callable[[], None]] = []
        try:
            row, transcript, message = await run_blocking(_load_charge_claim_store, user, conversation_id, prepare,
                                                          reply_id, channel, index_later, parent_id)
        except _ModelChanged:
            continue
        task = _reply_task(row, reply_id, channel, transcript, message, index_later)
        turn = await Turn(row, task, origin=origin, ref=ref).begin()
        turn.user_message = message_dict(transcript, message) if announce_user_message else None
        return turn
    raise _busy()


def _load_charge_claim_store(user, conversation_id: str, prepare: Prepare, reply_id: str, channel: str,
                             index_later: list[Callable[[], None]], parent_id: str,
                             ) -> tuple[Conversation, Transcript, Message]:
    """The blocking part of a turn's start in one call, not two (the row, then the rest):
    each worker-thread call costs a thread hop, about 0.1 ms of CPU here, and waits for a
    turn of the event loop, which lasts 50–100 ms in a burst of 200 turn starts."""
    row = conversations.get_row(user, conversation_id)
    charged, mutate = prepare(row)

    def pinned(transcript: Transcript) -> Message:
        result = mutate(transcript)
        if transcript.model != charged:
            raise _ModelChanged()
        return result

    transcript, message = _charged(_claim_and_store)(user, charged, row, reply_id, channel, pinned, index_later,
                                                     charged, parent_id)
    return row, transcript, message


def _charged(start: Callable[..., T]) -> Callable[..., T]:
    """`start` (which begins a reply) with the model request counted first, and given back
    if `start` fails, since then no model is asked. The count and the start are one
    worker-thread call: each call costs a thread hop on top of its queries (bench §3)."""
    def charged_start(user, model_id: str, *args: Any, **kwargs: Any) -> T:
        quotas.check_and_count(user, model_id)
        try:
            return start(*args, **kwargs)
        except BaseException:
            with contextlib.suppress(Exception):
                quotas.refund(user, model_id)
            raise
    return charged_start


def _claim_and_store(row: Conversation, reply_id: str, channel: str, mutate,
                     index_later: list[Callable[[], None]] | None, model: str, parent_id: str) -> tuple[Transcript, Message]:
    """Claim the reply slot (which moves the conversation up the sidebars), store the change,
    then record what the reply answers (the message `mutate` returns) unless the claim
    already did (`parent_id` known before the write); the slot is released if storing
    fails. Blocking: one worker-thread call."""
    updated_at = row.updated_at
    if not claim.claim(row, reply_id, parent_id, model, channel):
        raise _busy()
    try:
        transcript, message = conversations.update_transcript(row, mutate, touch=False, index_later=index_later)
    except BaseException:
        claim.release(row, reply_id, updated_at=updated_at)
        raise
    if not parent_id:
        claim.set_parent(row, reply_id, message.id, row.model)
    return transcript, message


async def edit_message(user, conversation_id: str, message_id: str, content: str, *, origin=None, ref=None) -> Turn:
    _check_content(content)
    await _check_reply_rate(user)
    sibling_id = new_message_id()

    def add_sibling(transcript: Transcript) -> Message:
        old = transcript.messages.get(message_id)
        if old is None or old.role != "user":
            raise not_found()
        return transcript.add_message(old.parent, "user", content, message_id=sibling_id)

    # Titled conversations keep their title; one whose first reply failed gets one now.
    return await _charged_turn(user, conversation_id, _on_its_model(user, add_sibling), origin, ref,
                               parent_id=sibling_id)


async def regenerate(user, conversation_id: str, *, origin=None, ref=None) -> Turn:
    """A new reply to the last user message of the active branch; the old reply stays a sibling."""
    await _check_reply_rate(user)

    def to_last_user_message(transcript: Transcript) -> Message:
        message = transcript.last_user_message()
        if message is None:
            raise ChatError("invalid_message", "There is no message to reply to.")
        transcript.active_leaf = message.id  # the new reply's branch; its siblings stay
        return message

    return await _charged_turn(user, conversation_id, _on_its_model(user, to_last_user_message), origin, ref,
                               announce_user_message=False)


def _on_its_model(user, mutate: Callable[[Transcript], Message]) -> Prepare:
    """`_charged_turn`'s `prepare` for a turn on the conversation's own model."""
    def prepare(row: Conversation) -> tuple[str, Callable[[Transcript], Message]]:
        _check_room(user, row.model)
        return row.model, mutate
    return prepare


def _continuable(transcript: Transcript, message_id: str | None) -> Message:
    """The reply to continue: `message_id`, or the last message of the active branch. It must
    be a reply cut by the token limit or interrupted, with nothing written after it."""
    if message_id is None:
        branch = transcript.active_branch()
        message = branch[-1] if branch else None
    else:
        message = transcript.messages.get(message_id)
        if message is None:
            raise not_found()
    if message is None or message.role != "assistant" or message.status not in CONTINUABLE_STATUSES:
        raise ChatError("invalid_message", "Only a reply cut by the length limit or interrupted can be continued.")
    if transcript.children(message.id):
        raise ChatError("invalid_message", "Only the last reply of a branch can be continued.")
    return message


async def continue_reply(user, conversation_id: str, message_id: str | None, *, origin=None, ref=None) -> Turn:
    """The model writes on in the same message, after the text a cut or interrupted reply has.

    Claimed, counted and limited like a regenerate; the reply keeps its id, so every tab
    appends to the message it shows (reply.started with `continues`)."""
    row = await get_row(user, conversation_id)
    stored = await run_blocking(conversations.load_transcript, row)
    target = _continuable(stored, message_id)  # refused before it costs a reply
    await _check_reply_rate(user)
    _check_room(user, row.model)

    def make_active(transcript: Transcript) -> Message:
        message = _continuable(transcript, target.id)  # again, inside the write: it may have changed
        transcript.active_leaf = message.id
        return message

    channel = await events.new_reply_channel()
    transcript, message = await run_blocking(_charged(_claim_and_store), user, row.model, row, target.id, channel,
                                             make_active, None, row.model, target.parent)
    task = ReplyTask(row=row, reply_id=message.id, parent_id=message.parent, model=row.model,
                     model_messages=transcript.model_messages(), channel=channel, prefix=message.content,
                     user=row.owner_id)
    return await Turn(row, task, origin=origin, ref=ref).begin()


async def switch_branch(user, conversation_id: str, message_id: str, *, origin=None, ref=None) -> None:
    row = await get_row(user, conversation_id)
    if row.reply_message:
        raise _busy()

    def switch(transcript: Transcript) -> None:
        if message_id not in transcript.messages:
            raise not_found()
        transcript.switch_branch(message_id)

    def switch_and_render() -> list[dict]:
        transcript, _ = conversations.update_transcript(row, switch, touch=False)
        return branch_dicts(transcript)

    await events.conversation_state(row, await run_blocking(switch_and_render), origin=origin, ref=ref)


async def stop_generation(user, conversation_id: str) -> None:
    row = await get_row(user, conversation_id)
    if not row.reply_channel:
        raise ChatError("invalid_message", "No reply is being written in this conversation.")
    await events.request_stop(row.reply_channel)


async def configure(user, conversation_id: str, *, model: str | None, system_prompt: str | None, origin=None, ref=None) -> None:
    if model is not None:
        _check_model(model)
    row = await run_blocking(conversations.configure, user, conversation_id, model=model, system_prompt=system_prompt)
    await events.conversation_updated(row, origin=origin, ref=ref)


async def rename(user, conversation_id: str, title: str, *, origin=None, ref=None) -> None:
    row = await run_blocking(conversations.rename, user, conversation_id, title)
    await events.conversation_updated(row, origin=origin, ref=ref)


async def organize(user, conversation_id: str, *, pinned: bool | None = None, archived: bool | None = None,
                   origin=None, ref=None) -> None:
    """Pin or archive a conversation; every tab of the user hears `conversation.updated`."""
    row = await run_blocking(conversations.organize, user, conversation_id, pinned=pinned, archived=archived)
    await events.conversation_updated(row, origin=origin, ref=ref)


async def delete(user, conversation_id: str, *, origin=None, ref=None) -> None:
    await run_blocking(conversations.delete, user, conversation_id)
    await events.conversation_deleted(user.pk, conversation_id, origin=origin, ref=ref)


async def share(user, conversation_id: str) -> str:
    """Publish a snapshot of the active branch; returns the link as a path (`/s/<token>/`).

    Sharing again replaces the snapshot and the link. Every tab of the user hears
    `conversation.updated` (its `shared` is now true); the asking socket also gets
    `conversation.shared` with the URL, which is never sent anywhere else.
    """
    row, url = await run_blocking(sharing.share, user, conversation_id)
    await events.conversation_updated(row)
    return url


async def share_link(user, conversation_id: str) -> str:
    """The link of a shared conversation again (the same link, the same snapshot), for its owner only."""
    return await run_blocking(sharing.current_link, user, conversation_id)


async def unshare(user, conversation_id: str) -> None:
    """Withdraw the link; it answers 404 from the moment this returns."""
    row = await run_blocking(sharing.unshare, user, conversation_id)
    await events.conversation_updated(row)


async def search(user, query: str) -> list[dict]:
    """Full-text search over the titles and messages of the user's conversations (chat/search.py)."""
    if len(query) > protocol.MAX_QUERY_CHARS:
        raise ChatError("too_large", f"Search queries are limited to {protocol.MAX_QUERY_CHARS} characters.")
    return await run_blocking(search_index.search, user, query)
