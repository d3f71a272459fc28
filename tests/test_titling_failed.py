"""A conversation whose first reply failed or was stopped still gets a title (chat/replies/titling.py):
from the model when it may answer, else from the user's own words, without a model call."""
from __future__ import annotations

import pytest

from chat.titles import TITLE_PROMPT
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


def title_requests(fake_model) -> list[dict]:
    return [body for body in fake_model.requests if body["messages"][-1]["content"] == TITLE_PROMPT]


async def first_reply(socket: ChatSocket, content: str) -> tuple[str, dict]:
    await socket.send("message.send", conversation=None, content=content)
    conversation = (await socket.receive("conversation.created"))["conversation"]["id"]
    _, final = await socket.reply_text()
    return conversation, final


async def test_a_first_reply_that_failed_midway_is_titled_by_the_model(make_user, fake_model):
    socket = await ChatSocket.connect(await create_user("alice"))
    conversation, final = await first_reply(socket, "Plan a trip to Lisbon #fail=2")
    assert final["type"] == "reply.failed" and final["error"]["code"] == "model_failed"
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["id"] == conversation
    assert updated["conversation"]["title"] == "Plan a trip chat"  # the scripted model's title
    [request] = title_requests(fake_model)
    assert request["messages"][1]["content"] == "Plan a trip to Lisbon #fail=2"


async def test_a_first_reply_refused_by_the_provider_is_titled_from_the_message(make_user, fake_model):
    socket = await ChatSocket.connect(await create_user("alice"))
    conversation, final = await first_reply(socket, "Plan a trip to Lisbon #status=429")
    assert final["type"] == "reply.failed" and final["error"]["code"] == "rate_limited"
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["id"] == conversation
    assert updated["conversation"]["title"].startswith("Plan a trip to Lisbon")
    assert title_requests(fake_model) == []  # a rate-limited model is not asked again for a title


async def test_a_stopped_first_reply_is_titled(make_user, fake_model):
    socket = await ChatSocket.connect(await create_user("alice"))
    await socket.send("message.send", conversation=None, content="Stop me soon please #tokens=300 #delay=0.05")
    conversation = (await socket.receive("conversation.created"))["conversation"]["id"]
    await socket.receive("reply.delta")
    await socket.send("generation.stop", conversation=conversation)
    final = await socket.receive("reply.completed")
    assert final["stopped"] is True
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["title"] == "Stop me soon chat"
    # The title request carries the partial reply as the assistant's turn.
    [request] = title_requests(fake_model)
    assert request["messages"][2]["role"] == "assistant" and request["messages"][2]["content"].startswith("w0")


def test_a_title_request_without_a_reply_keeps_the_turns_alternating():
    from chat.titles import NO_REPLY, title_request_messages

    messages = title_request_messages("hello", "")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == NO_REPLY
