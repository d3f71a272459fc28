"""A title for a new conversation, asked of the model after its first reply.

Never delays or fails the reply: a failed, slow or unaffordable title call falls
back to the user's own words (chat/titles.py cleans either). A first reply that
failed or was stopped still gets a title, so the sidebar never keeps a "New chat"
that was asked something: from the model when it may answer, else from those words.
"""
from __future__ import annotations

import asyncio
import logging

from chat import conversations, events, quotas
from chat.backends import ModelError, complete
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.models import Conversation
from chat.titles import clean_title, title_request_messages
from chat.transcript import Transcript

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 24
TITLE_TIMEOUT = 60.0
# A reply that failed with one of these says the model will not answer a title either
# (or that asking would cost a request that is not there): use the user's words at once.
NO_TITLE_CALL_CODES = frozenset({"model_unavailable", "rate_limited", "quota_exceeded", "busy"})


def model_may_answer(failure: ModelError | None) -> bool:
    """Whether a title is worth asking of the model after a reply that ended with `failure`."""
    return failure is None or failure.code not in NO_TITLE_CALL_CODES


async def make_title(row: Conversation, model: str, user_text: str, reply_text: str, *, ask_model: bool = True) -> None:
    """Title the conversation (unless it was titled meanwhile) and tell every tab of the user.

    `ask_model` False: the title is the user's own words, without a model call."""
    try:
        # A title costs a request of the daily budget; skipped when it would take the last one.
        titled = ask_model and await run_blocking(quotas.try_count, row.owner_id, model, "title")
        # Titles wait behind every reply of the local model (purpose "title"), never the other way round.
        raw = ""
        if titled:
            request = complete(model, title_request_messages(user_text, reply_text), TITLE_MAX_TOKENS, user=row.owner_id)
            raw = await asyncio.wait_for(request, TITLE_TIMEOUT)
    except Exception:
        logger.info("title call failed; using the user's words", exc_info=True)
        raw = ""
    title = clean_title(raw.replace("\x00", ""), user_text)  # PostgreSQL refuses NUL in text (issue 16)
    try:
        fresh = await run_blocking(_set_title_once, row, title)
    except ChatError:
        return
    if not fresh:  # the title is stored; tabs that missed it see it when they resynchronise
        return
    try:
        await events.conversation_updated(row)
    except Exception:
        logger.warning("title not announced", exc_info=True, extra={"conversation": row.pk})


def _set_title_once(row: Conversation, title: str) -> bool:
    """Store the title unless the conversation has one, then re-read the row's pin, archive
    and share (changed since the reply started?) for the sidebar event; False if that read
    failed. One worker-thread call, not two: each costs a thread hop."""
    def set_if_untitled(transcript: Transcript) -> None:
        if not transcript.title:
            transcript.title = title

    conversations.update_transcript(row, set_if_untitled, touch=False)
    try:
        row.refresh_from_db(fields=["pinned", "archived", "share_token_hash"])
    except Exception:
        logger.warning("title not announced", exc_info=True, extra={"conversation": row.pk})
        return False
    return True
