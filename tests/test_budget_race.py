"""The model that is charged is the model that runs (issue 16, item 1).

A `conversation.configure` from another tab can land between the moment a request is
charged and the moment its user message is written. The audit switched a free local
conversation to a metered model that way: 10 of 12 sends reached the paid model with
nothing counted. Here the other tab's switch is made to land exactly in that gap.
"""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import conversations, quotas
from chat.backends import LOCAL_MODEL_ID
from tests.conftest import ECHO_MODEL
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


@pytest.fixture
def switch_to_metered_model_before_the_write(monkeypatch):
    """Make another tab's `conversation.configure` land between the charge and the write, once."""
    write = conversations.update_transcript
    switched = []

    def racing_write(row, mutate, **kwargs):
        if not switched:
            switched.append(True)  # first: configure writes through this same function
            conversations.configure(row.owner, row.pk, model=ECHO_MODEL)
        return write(row, mutate, **kwargs)

    monkeypatch.setattr(conversations, "update_transcript", racing_write)
    return switched


async def local_conversation(user) -> str:
    """A titled conversation on the free local model, so that no title request is made."""
    row, _, _ = await sync_to_async(conversations.create_conversation)(user, LOCAL_MODEL_ID, "first words")
    await sync_to_async(conversations.rename)(user, row.pk, "Budgets")
    return row.pk


async def metered_requests(fake_model) -> int:
    return len(fake_model.requests)


@pytest.mark.parametrize("frame", ["message.send", "message.regenerate", "message.edit"])
async def test_a_model_switched_mid_request_is_charged_for_the_model_that_runs(
        frame, settings, fake_model, switch_to_metered_model_before_the_write):
    settings.HF_DAILY_REQUESTS_PER_USER = 10
    user = await create_user()
    conversation = await local_conversation(user)
    socket = await ChatSocket.connect(user)
    await socket.send("conversation.open", conversation=conversation)
    state = await socket.receive("conversation.state")
    first_message = state["messages"][0]["id"]
    fields = {"message.send": {"content": "hello"}, "message.regenerate": {},
              "message.edit": {"message": first_message, "content": "other words"}}[frame]
    await socket.send(frame, conversation=conversation, **fields)
    started = await socket.receive("reply.started", timeout=40)
    _, end = await socket.reply_text()
    assert switch_to_metered_model_before_the_write, "the other tab's switch never landed"
    assert started["model"] == ECHO_MODEL and end["type"] == "reply.completed"
    assert await metered_requests(fake_model) == 1
    assert await sync_to_async(quotas._used)(user.pk) == 1  # the request that reached the metered model was counted
    await socket.close()


async def test_a_request_over_budget_on_the_switched_model_is_refused_and_nothing_is_written(
        settings, fake_model, switch_to_metered_model_before_the_write):
    settings.HF_DAILY_REQUESTS_PER_USER = 1
    user = await create_user()
    await sync_to_async(quotas.check_and_count)(user, ECHO_MODEL, "reply")  # the day's one request is spent
    conversation = await local_conversation(user)
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=conversation, content="hello", ref="r1")
    error = await socket.receive("error")
    assert (error["code"], error["ref"]) == ("quota_exceeded", "r1")
    assert await metered_requests(fake_model) == 0
    await socket.send("conversation.open", conversation=conversation)
    state = await socket.receive("conversation.state")
    assert [m["content"] for m in state["messages"]] == ["first words"]  # the refused message was not stored
    assert state["conversation"]["model"] == ECHO_MODEL and state["generating"] is None
    await socket.close()
