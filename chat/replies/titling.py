"""A title for a new conversation, asked of the model after its first reply.

Never delays or fails the reply: a failed, slow or unaffordable title call falls
back to the user's own words (chat/titles.py cleans either).
"""
from __future__ import annotations

import asyncio
import logging

from chat import conversations, events, quotas
from chat.backends import get_backend
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.models import Conversation
from chat.titles import clean_title, title_request_messages
from chat.transcript import Transcript

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 24
TITLE_TIMEOUT = 60.0


async def make_title(row: Conversation, model: str, user_text: str, reply_text: str) -> None:
    """Title the conversation (unless it was titled meanwhile) and tell every tab of the user."""
    try:
        # A title costs a request of the daily budget; skipped when it would take the last one.
        titled = await run_blocking(quotas.try_count, row.owner_id, model, "title")
        raw = await asyncio.wait_for(_complete(model, title_request_messages(user_text, reply_text), row.owner_id),
                                     TITLE_TIMEOUT) if titled else ""
    except Exception:
        logger.info("title call failed; using the user's words", exc_info=True)
        raw = ""
    title = clean_title(raw.replace("\x00", ""), user_text)  # PostgreSQL refuses NUL in text (issue 16)
    try:
        await run_blocking(_set_title_once, row, title)
    except ChatError:
        return
    await events.conversation_updated(row)


async def _complete(model: str, messages: list[dict], user: int) -> str:
    # A title waits behind every reply in the local model's line.
    stream = get_backend(model).stream(model, messages, max_tokens=TITLE_MAX_TOKENS, user=user, purpose="title")
    try:
        return "".join([piece async for piece in stream])
    finally:
        await stream.aclose()


def _set_title_once(row: Conversation, title: str) -> None:
    def set_if_untitled(transcript: Transcript) -> None:
        if not transcript.title:
            transcript.title = title

    conversations.update_transcript(row, set_if_untitled, touch=False)
