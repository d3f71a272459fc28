"""A title for a new conversation, asked of the model after its first reply.

Never delays or fails the reply: a failed, slow or unaffordable title call falls
back to the user's own words (chat/titles.py cleans either).
"""
from __future__ import annotations

import asyncio
import logging

from chat import conversations, events, quotas
from chat.backends import complete
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
        await run_blocking(_set_title_once, row, title)
    except ChatError:
        return
    try:
        await events.conversation_updated(row)
    except Exception:  # the title is stored; tabs that missed it see it when they resynchronise
        logger.warning("title not announced", exc_info=True, extra={"conversation": row.pk})


def _set_title_once(row: Conversation, title: str) -> None:
    def set_if_untitled(transcript: Transcript) -> None:
        if not transcript.title:
            transcript.title = title

    conversations.update_transcript(row, set_if_untitled, touch=False)
