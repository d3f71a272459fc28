"""Issue 16, item 6: a NUL character (which PostgreSQL refuses in text and JSON) gets a clear
`invalid_message` before anything is written, and the conversation goes on working.

Run it on PostgreSQL too: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test (make test does).
"""
from __future__ import annotations

import json

import pytest

from tests.sockets import ChatSocket, create_user, finish_replies
from tests.test_socket_errors import expect_error, still_open, stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def no_reply_left_running():
    yield
    await finish_replies()


async def test_nul_anywhere_is_invalid_message_and_changes_nothing():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    await socket.send("conversation.open", conversation=conversation_id)
    message_id = (await socket.receive("conversation.state"))["messages"][0]["id"]
    before = await stored(user, conversation_id)
    frames = {
        "title": {"type": "conversation.rename", "conversation": conversation_id, "title": "bad\u0000title"},
        "system prompt": {"type": "conversation.configure", "conversation": conversation_id,
                          "system_prompt": "be\u0000nice"},
        "message": {"type": "message.send", "conversation": conversation_id, "content": "hello\u0000there"},
        "first message": {"type": "message.send", "conversation": None, "content": "\u0000"},
        "edit": {"type": "message.edit", "conversation": conversation_id, "message": message_id, "content": "a\u0000"},
        "search": {"type": "conversation.search", "query": "hello\u0000"},
        "id": {"type": "conversation.open", "conversation": "ab\u0000cd"},
    }
    for name, frame in frames.items():
        await socket.send_raw(json.dumps({**frame, "ref": name}))
        error = await expect_error(socket, "invalid_message", name)
        assert name == "id" or "NUL" in error["message"], error
    await still_open(socket)
    assert await stored(user, conversation_id) == before
    # The conversation is not poisoned: the same changes without the NUL still work.
    ref = await socket.send("conversation.rename", conversation=conversation_id, title="good title")
    assert (await socket.receive("conversation.updated", ref=ref))["conversation"]["title"] == "good title"
    await socket.close()
