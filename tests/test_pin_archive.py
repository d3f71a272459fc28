"""Pinned and archived conversations (chat/conversations.py `organize`): every tab of the
user hears it, the sidebar's order and hello follow, nothing else of the conversation moves."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import conversations
from chat.models import Conversation
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


async def test_pin_reaches_every_tab_and_puts_the_conversation_first_in_hello(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    older = await socket.new_conversation("the older one")
    newer = await socket.new_conversation("the newer one")
    other_tab = await ChatSocket.connect(alice)
    before = await sync_to_async(Conversation.objects.get)(pk=older)

    ref = await socket.send("conversation.pin", conversation=older)  # `pinned` absent: pin
    mine = await socket.receive("conversation.updated", ref=ref)
    assert mine["conversation"]["id"] == older and mine["conversation"]["pinned"] is True
    theirs = await other_tab.receive("conversation.updated")
    assert theirs["conversation"]["pinned"] is True and "ref" not in theirs

    hello = (await ChatSocket.connect(alice)).hello
    assert [c["id"] for c in hello["conversations"]] == [older, newer]
    assert [c["pinned"] for c in hello["conversations"]] == [True, False]
    after = await sync_to_async(Conversation.objects.get)(pk=older)
    assert after.updated_at == before.updated_at  # pinning is not activity: the date group stays

    ref = await socket.send("conversation.pin", conversation=older, pinned=False)
    assert (await socket.receive("conversation.updated", ref=ref))["conversation"]["pinned"] is False
    hello = (await ChatSocket.connect(alice)).hello
    assert [c["id"] for c in hello["conversations"]] == [newer, older]


async def test_archive_moves_a_conversation_out_of_the_list_into_hellos_archived(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    kept = await socket.new_conversation("keep me in the list")
    archived = await socket.new_conversation("put me away")
    other_tab = await ChatSocket.connect(alice)

    ref = await socket.send("conversation.archive", conversation=archived, archived=True)
    assert (await socket.receive("conversation.updated", ref=ref))["conversation"]["archived"] is True
    assert (await other_tab.receive("conversation.updated"))["conversation"]["archived"] is True

    hello = (await ChatSocket.connect(alice)).hello
    assert [c["id"] for c in hello["conversations"]] == [kept]
    assert [(c["id"], c["archived"]) for c in hello["archived"]] == [(archived, True)]

    # Still a conversation like the others: it opens, and search finds it.
    ref = await socket.send("conversation.open", conversation=archived)
    state = await socket.receive("conversation.state", ref=ref)
    assert state["conversation"]["archived"] is True and len(state["messages"]) == 2
    ref = await socket.send("conversation.search", query="away")
    results = (await socket.receive("search.results", ref=ref))["results"]
    assert [r["conversation"]["id"] for r in results] == [archived]

    ref = await socket.send("conversation.archive", conversation=archived, archived=False)
    assert (await socket.receive("conversation.updated", ref=ref))["conversation"]["archived"] is False
    hello = (await ChatSocket.connect(alice)).hello
    assert {c["id"] for c in hello["conversations"]} == {kept, archived} and hello["archived"] == []


async def test_a_title_after_pinning_keeps_the_pin_in_every_tab(make_user):
    """The reply task's row was read before the pin: its title must not announce it unpinned."""
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    await socket.send("message.send", conversation=None, content="#tokens=30 #delay=0.03 pin me while I write")
    conversation = (await socket.receive("conversation.created"))["conversation"]["id"]
    ref = await socket.send("conversation.pin", conversation=conversation, pinned=True)
    await socket.receive("conversation.updated", ref=ref)
    await socket.reply_text()
    title = await socket.receive("conversation.updated")
    assert title["conversation"]["title"] and title["conversation"]["pinned"] is True


async def test_pin_and_archive_of_another_users_conversation_are_not_found(make_user):
    alice, mallory = await create_user("alice"), await create_user("mallory")
    socket = await ChatSocket.connect(alice)
    conversation = await socket.new_conversation("mine alone")
    intruder = await ChatSocket.connect(mallory)
    for kind in ("conversation.pin", "conversation.archive"):
        ref = await intruder.send(kind, conversation=conversation)
        assert (await intruder.receive("error", ref=ref))["code"] == "not_found"
    row = await sync_to_async(Conversation.objects.get)(pk=conversation)
    assert not row.pinned and not row.archived
    assert await socket.nothing_more()


@pytest.mark.parametrize("value", ["yes", 1, None, [], {}])
async def test_pinned_and_archived_must_be_booleans(make_user, value):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    conversation = await socket.new_conversation("flags")
    for kind, name in (("conversation.pin", "pinned"), ("conversation.archive", "archived")):
        ref = await socket.send(kind, conversation=conversation, **{name: value})
        assert (await socket.receive("error", ref=ref))["code"] == "invalid_message"
    row = await sync_to_async(Conversation.objects.get)(pk=conversation)
    assert not row.pinned and not row.archived


def test_the_sidebar_lists_pinned_first_and_leaves_archived_out(make_user):
    user = make_user("bob")
    rows = [conversations.create_conversation(user, "test/echo", f"message {i}")[0] for i in range(4)]
    conversations.organize(user, rows[0].pk, pinned=True)  # the oldest
    conversations.organize(user, rows[3].pk, archived=True)  # the newest
    assert [r.pk for r in conversations.list_conversations(user)] == [rows[0].pk, rows[2].pk, rows[1].pk]
    assert [r.pk for r in conversations.list_conversations(user, 2)] == [rows[0].pk, rows[2].pk]
    assert [r.pk for r in conversations.list_archived(user)] == [rows[3].pk]
    # The hello frame's one-query version gives the same two lists.
    sidebar, archived = conversations.sidebar_and_archived(user)
    assert [r.pk for r in sidebar] == [rows[0].pk, rows[2].pk, rows[1].pk] and [r.pk for r in archived] == [rows[3].pk]
