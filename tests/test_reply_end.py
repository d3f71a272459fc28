"""The end of a reply: stored, its conversation freed and shown to the tabs in one worker-thread
call, and a store that fails for a while retried while the conversation stays claimed."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import conversations
from chat.errors import ChatError
from chat.models import Conversation
from chat.replies import task as reply_task
from chat.replies import titling
from chat.store import get_store
from tests.conftest import record_worker_calls
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


async def test_a_finished_reply_is_stored_freed_and_shown_in_one_worker_call(monkeypatch):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()  # titled: the next reply asks for no title
    calls = record_worker_calls(monkeypatch, reply_task)
    await socket.send("message.send", conversation=conversation_id, content="#tokens=5")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and final["message"]["content"] == text
    assert final["message"]["html"] and final["message"]["status"] == "complete"
    # Besides the turn's deferred search index (after the first delta): the reply's end, once.
    assert [c for c in calls if c != "index_changes"] == ["store_release_show"]
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert row.reply_message is None  # free for the next turn
    stored = get_store().load(user.pk, conversation_id).active_branch()[-1]
    assert (stored.id, stored.content, stored.status) == (final["message"]["id"], text, "complete")
    await socket.close()


async def test_a_title_is_stored_and_its_row_reread_in_one_worker_call(monkeypatch):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    calls = record_worker_calls(monkeypatch, titling)
    await socket.send("message.send", conversation=None, content="name this conversation")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    await socket.reply_text()
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["id"] == conversation_id and updated["conversation"]["title"]
    assert calls == ["try_count", "_set_title_once"]
    assert get_store().load(user.pk, conversation_id).title == updated["conversation"]["title"]
    await socket.close()


async def test_a_store_that_fails_once_is_retried_with_the_conversation_still_claimed(monkeypatch):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    append = conversations.append_message
    claims_at_each_try: list[str | None] = []

    def flaky_append(row, *args, **kwargs):
        claims_at_each_try.append(Conversation.objects.get(pk=row.pk).reply_message)
        if len(claims_at_each_try) == 1:
            raise ChatError("storage_unavailable", "The store is down for a moment.")
        return append(row, *args, **kwargs)

    monkeypatch.setattr(reply_task.conversations, "append_message", flaky_append)
    await socket.send("message.send", conversation=conversation_id, content="#tokens=3")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and final["message"]["content"] == text
    reply_id = final["message"]["id"]
    assert claims_at_each_try == [reply_id, reply_id]  # nobody could start a turn between the tries
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert row.reply_message is None
    assert get_store().load(user.pk, conversation_id).active_branch()[-1].content == text
    await socket.close()
