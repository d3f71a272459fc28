"""Conversations and messages as the protocol and the templates show them."""
from __future__ import annotations

import html
from functools import lru_cache

from chat.models import Conversation
from chat.rendering import render_markdown
from chat.transcript import Message, Transcript


def conversation_dict(conversation: Conversation) -> dict:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "shared": conversation.share_token_hash is not None,
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


@lru_cache(maxsize=4096)
def _reply_html(content: str) -> str:
    # Replies are rendered again on every conversation.open; the cache keeps a
    # busy conversation from being re-rendered by every tab that opens it.
    return render_markdown(content)


def user_text_html(content: str) -> str:
    """A user's message is shown as typed: escaped, with its line breaks."""
    paragraphs = [p for p in content.split("\n\n") if p.strip()] or [content]
    return "".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs)


def message_html(message: Message) -> str:
    return _reply_html(message.content) if message.role == "assistant" else user_text_html(message.content)


def message_dict(transcript: Transcript | None, message: Message) -> dict:
    """`transcript` None: a message that could not be stored, so it has no siblings."""
    data = {
        "id": message.id,
        "parent": message.parent,
        "role": message.role,
        "content": message.content,
        "html": message_html(message),
        "created_at": message.created_at,
        "siblings": transcript.siblings(message.id) if transcript else [message.id],
    }
    if message.role == "assistant":
        data["model"] = message.model
        data["status"] = message.status
        if message.error:
            data["error"] = message.error
    return data


def branch_dicts(transcript: Transcript) -> list[dict]:
    return [message_dict(transcript, message) for message in transcript.active_branch()]
