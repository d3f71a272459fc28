"""The account's preferences and deletion as the chat socket sees them: `hello` carries the
preferences, a new conversation starts from them, and deleting the account closes its sockets."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat import preferences
from tests.conftest import ECHO_MODEL
from tests.sockets import ChatSocket, create_user
from tests.test_security_credentials import browser_session, close_code, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]

OTHER_MODEL = "test/other"
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def two_models(settings):
    settings.HF_MODELS = [ECHO_MODEL, OTHER_MODEL]


async def test_hello_carries_the_preferences():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    assert socket.hello["preferences"] == {"default_model": ECHO_MODEL, "custom_instructions": ""}
    await socket.close()
    await sync_to_async(preferences.save)(user, custom_instructions="Be brief.", default_model=OTHER_MODEL)
    socket = await ChatSocket.connect(user)
    assert socket.hello["preferences"] == {"default_model": OTHER_MODEL, "custom_instructions": "Be brief."}
    await socket.close()


async def test_a_new_conversation_without_a_model_starts_on_the_default_with_the_instructions(fake_model):
    user = await create_user()
    await sync_to_async(preferences.save)(user, custom_instructions="Answer in French.", default_model=OTHER_MODEL)
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="Hello")
    created = await socket.receive("conversation.created")
    assert created["conversation"]["model"] == OTHER_MODEL
    assert created["conversation"]["system_prompt"] == "Answer in French."
    await socket.reply_text()
    asked = fake_model.requests[0]
    assert asked["model"] == OTHER_MODEL
    assert asked["messages"][0] == {"role": "system", "content": "Answer in French."}
    await socket.close()


async def test_a_model_named_in_the_first_message_wins_over_the_default():
    user = await create_user()
    await sync_to_async(preferences.save)(user, custom_instructions="", default_model=OTHER_MODEL)
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="Hello", model=ECHO_MODEL)
    created = await socket.receive("conversation.created")
    assert created["conversation"]["model"] == ECHO_MODEL
    await socket.reply_text()
    await socket.close()


async def test_deleting_the_account_closes_its_sockets_and_no_one_elses():
    alice, bob = await create_user("alice"), await create_user("bob")
    client, socket = await browser_session(alice)
    _, bobs = await browser_session(bob)
    response = await sync_to_async(client.post)("/settings/delete/", {"password": PASSWORD, "confirm": "on"})
    assert response.status_code == 200, response.content[:300]
    assert await close_code(socket) == 4401
    assert await stays_open(bobs)
    await bobs.close()
    assert not await sync_to_async(Client().login)(username="alice", password=PASSWORD)
