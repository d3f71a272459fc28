"""The chat loop over the socket: send, stream, store, title, and two tabs in sync."""
from __future__ import annotations

import pytest

from chat.store import get_store
from tests.conftest import ECHO_MODEL
from tests.sockets import ChatSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


async def test_hello_lists_models_conversations_and_limits(make_user):
    user = await make_user_async(make_user)
    socket = await ChatSocket.connect(user)
    hello = socket.hello
    assert hello["protocol"] == 1
    assert hello["user"]["username"] == "alice"
    assert {m["id"]: m["available"] for m in hello["models"]}[ECHO_MODEL] is True
    assert hello["conversations"] == []
    assert hello["limits"]["max_content_chars"] > 0
    await socket.close()


async def test_first_message_creates_conversation_streams_reply_and_titles_it(make_user):
    user = await make_user_async(make_user)
    socket = await ChatSocket.connect(user)
    ref = await socket.send("message.send", conversation=None, content="hello there world")
    created = await socket.receive("conversation.created")
    assert created["ref"] == ref
    conversation_id = created["conversation"]["id"]
    message = await socket.receive("message.created")
    assert message["message"]["content"] == "hello there world" and message["ref"] == ref
    started = await socket.receive("reply.started")
    assert started["parent"] == message["message"]["id"] and started["model"] == ECHO_MODEL
    text, final = await socket.reply_text()
    assert text == "Echo: hello there world"
    assert final["type"] == "reply.completed" and final["stopped"] is False
    assert final["message"]["content"] == text and final["message"]["status"] == "complete"
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["title"] == "hello there world chat"
    transcript = get_store().load(user.pk, conversation_id)
    assert [m.content for m in transcript.active_branch()] == ["hello there world", text]
    assert transcript.title == "hello there world chat"
    await socket.close()


async def make_user_async(make_user, name="alice"):
    from asgiref.sync import sync_to_async

    return await sync_to_async(make_user)(name)
