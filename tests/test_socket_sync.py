"""Several tabs of one user stay in sync; other users hear nothing; replies belong to the
server (they outlive the tab that asked, resume mid-way, stop from any tab, survive a
dead process as `interrupted`)."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chat.models import Conversation
from chat.store import ConversationNotFound, get_store
from tests.conftest import ECHO_MODEL
from tests.fake_model_server import TITLE_PREFIX
from tests.sockets import ChatSocket, create_user, finish_replies

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]

OTHER_MODEL = "test/other"


def words(n: int) -> str:
    """The text of a `#tokens=n` reply."""
    return " ".join(f"w{i}" for i in range(n))


def deltas_of(socket: ChatSocket, reply_id: str) -> list[dict]:
    return [f for f in socket.seen if f["type"] == "reply.delta" and f["message"] == reply_id]


async def watching_tab(user, conversation_id: str) -> ChatSocket:
    """Another tab of `user`, showing `conversation_id` (no reply running)."""
    tab = await ChatSocket.connect(user)
    ref = await tab.send("conversation.open", conversation=conversation_id)
    state = await tab.receive("conversation.state")
    assert state["ref"] == ref and state["generating"] is None
    return tab


def title_requests(fake_model) -> list[dict]:
    return [body for body in fake_model.requests if body["messages"][-1]["content"].startswith(TITLE_PREFIX)]


# --- Every tab hears the news ---------------------------------------------------------


async def test_new_conversation_reaches_every_tab_with_ref_only_on_the_askers_copy():
    user = await create_user()
    asker, other_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    ref = await asker.send("message.send", conversation=None, content="hello there world")
    mine = await asker.receive("conversation.created")
    theirs = await other_tab.receive("conversation.created")
    assert mine["ref"] == ref and "ref" not in theirs
    assert mine["conversation"] == theirs["conversation"]
    titled = await other_tab.receive("conversation.updated")
    assert titled["conversation"]["id"] == mine["conversation"]["id"]
    assert titled["conversation"]["title"] == "hello there world chat"
    # The other tab does not show that conversation: it heard only the sidebar's news.
    assert [f["type"] for f in other_tab.seen] == ["hello", "conversation.created", "conversation.updated"]
    assert await other_tab.nothing_more()
    await asker.close()
    await other_tab.close()


async def test_second_tab_sees_streamed_reply():
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    other_tab = await watching_tab(user, conversation_id)
    ref = await asker.send("message.send", conversation=conversation_id, content="#tokens=20 #delay=0.01")
    mine = await asker.receive("message.created")
    theirs = await other_tab.receive("message.created")
    assert mine["ref"] == ref and "ref" not in theirs
    assert mine["message"] == theirs["message"] and theirs["message"]["content"] == "#tokens=20 #delay=0.01"
    started = await other_tab.receive("reply.started")
    assert started["parent"] == theirs["message"]["id"]
    text, final = await other_tab.reply_text()
    assert final["type"] == "reply.completed" and final["stopped"] is False
    assert text == final["message"]["content"] == words(20)
    seqs = [f["seq"] for f in deltas_of(other_tab, started["message"])]
    assert seqs == list(range(len(seqs)))
    await asker.reply_text()
    assert [f["seq"] for f in deltas_of(asker, started["message"])] == seqs
    await asker.close()
    await other_tab.close()


async def test_another_user_receives_nothing():
    alice, bob = await create_user("alice"), await create_user("bob")
    asker, stranger = await ChatSocket.connect(alice), await ChatSocket.connect(bob)
    conversation_id = await asker.new_conversation()
    await asker.send("conversation.rename", conversation=conversation_id, title="Renamed")
    await asker.receive("conversation.updated")
    await asker.send("conversation.delete", conversation=conversation_id)
    await asker.receive("conversation.deleted")
    assert await stranger.nothing_more()
    assert stranger.seen == [stranger.hello]
    await asker.close()
    await stranger.close()


async def test_tab_hears_only_the_conversation_it_shows():
    user = await create_user()
    asker = await ChatSocket.connect(user)
    first, second = await asker.new_conversation("first one"), await asker.new_conversation("second one")
    other_tab = await watching_tab(user, first)
    await other_tab.send("conversation.open", conversation=second)
    await other_tab.receive("conversation.state")
    await asker.send("message.send", conversation=first, content="in the first")
    await asker.reply_text()
    sidebar = await other_tab.next_frame()  # the sidebar moves the conversation up, and that is all
    assert sidebar["type"] == "conversation.updated" and sidebar["conversation"]["id"] == first
    assert await other_tab.nothing_more()
    await asker.close()
    await other_tab.close()


# --- Replies belong to the server ---------------------------------------------------


async def test_hello_is_the_first_frame_even_when_news_comes_while_it_is_built(monkeypatch):
    """A socket joins its user's group before `hello` is built (so it misses nothing); news
    that comes meanwhile is held until `hello` has gone out, then delivered."""
    from chat import services

    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    build_hello, building = services.hello, asyncio.Event()

    async def slow_hello(someone):
        building.set()
        await asyncio.sleep(0.4)
        return await build_hello(someone)

    monkeypatch.setattr(services, "hello", slow_hello)
    connecting = asyncio.create_task(ChatSocket.attempt(user))  # asserts that its first frame is hello
    await building.wait()
    await asker.send("conversation.rename", conversation=conversation_id, title="Renamed meanwhile")
    outcome, late_tab = await connecting
    assert outcome == "hello"
    news = await late_tab.receive("conversation.updated")
    assert news["conversation"]["title"] == "Renamed meanwhile"
    await asker.close()
    await late_tab.close()


async def test_deltas_that_come_while_the_state_is_read_follow_the_state(monkeypatch):
    """Fan-out hands frames to a socket directly, not through its receive loop: the ones
    that come while `conversation.open` reads the state must wait for the state."""
    from chat import services

    read_state = services.open_conversation

    async def slow_read(row):
        await asyncio.sleep(0.4)  # deltas keep coming meanwhile (one every 30 ms)
        return await read_state(row)

    monkeypatch.setattr(services, "open_conversation", slow_read)
    user = await create_user()
    asker, late_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    await asker.send("message.send", conversation=None, content="#tokens=60 #delay=0.03")
    conversation_id = (await asker.receive("conversation.created"))["conversation"]["id"]
    await asker.receive("reply.delta")
    ref = await late_tab.send("conversation.open", conversation=conversation_id)
    first = await late_tab.next_frame()
    while first["type"] in ("conversation.created", "conversation.updated"):  # the sidebar's news may come first
        first = await late_tab.next_frame()
    assert (first["type"], first.get("ref")) == ("conversation.state", ref), first["type"]
    generating = first["generating"]
    text, final = await late_tab.reply_text()
    seqs = [f["seq"] for f in deltas_of(late_tab, generating["message"])]
    assert seqs == list(range(generating["seq"], generating["seq"] + len(seqs)))
    assert generating["content"] + text == final["message"]["content"] == words(60)
    await asker.reply_text()
    await asker.close()
    await late_tab.close()



async def test_tab_opening_mid_reply_resumes_from_the_snapshot_seq():
    user = await create_user()
    asker, late_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    await asker.send("message.send", conversation=None, content="#tokens=60 #delay=0.03")
    conversation_id = (await asker.receive("conversation.created"))["conversation"]["id"]
    for _ in range(5):
        await asker.receive("reply.delta")
    ref = await late_tab.send("conversation.open", conversation=conversation_id)
    state = await late_tab.receive("conversation.state")
    generating = state["generating"]
    assert state["ref"] == ref and generating is not None
    assert generating["model"] == ECHO_MODEL and generating["seq"] >= 5
    assert generating["content"].startswith("w0 w1 w2 w3 w4")
    text, final = await late_tab.reply_text()
    assert final["type"] == "reply.completed" and final["message"]["id"] == generating["message"]
    seqs = [f["seq"] for f in deltas_of(late_tab, generating["message"])]
    assert seqs == list(range(generating["seq"], generating["seq"] + len(seqs)))
    assert generating["content"] + text == final["message"]["content"] == words(60)
    await asker.close()
    await late_tab.close()


async def test_closing_the_asking_tab_does_not_stop_the_reply(fake_model):
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    other_tab = await watching_tab(user, conversation_id)
    await asker.send("message.send", conversation=conversation_id, content="#tokens=50 #delay=0.02")
    await asker.receive("reply.delta")
    await asker.close()
    text, final = await other_tab.reply_text()
    assert final["type"] == "reply.completed" and final["stopped"] is False
    assert final["message"]["content"] == words(50)
    reply = get_store().load(user.pk, conversation_id).active_branch()[-1]
    assert (reply.id, reply.content, reply.status) == (final["message"]["id"], words(50), "complete")
    record = fake_model.log[-1]
    assert await asyncio.to_thread(record.finished.wait, 5)
    assert record.outcome == "completed" and record.tokens_sent == 50
    await other_tab.close()


async def test_stop_from_another_tab_stops_the_reply_and_keeps_the_partial_text(fake_model):
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    other_tab = await watching_tab(user, conversation_id)
    await asker.send("message.send", conversation=conversation_id, content="#tokens=200 #delay=0.02")
    await other_tab.receive("reply.delta")
    await other_tab.receive("reply.delta")
    await other_tab.send("generation.stop", conversation=conversation_id)
    for tab in (asker, other_tab):
        final = await tab.receive("reply.completed")
        assert final["stopped"] is True and final["message"]["status"] == "stopped"
    partial = final["message"]["content"]
    assert partial and words(200).startswith(partial) and partial != words(200)
    reply = get_store().load(user.pk, conversation_id).active_branch()[-1]
    assert (reply.id, reply.content, reply.status) == (final["message"]["id"], partial, "stopped")
    # The model was hung up on, not left generating for nobody.
    record = fake_model.log[-1]
    assert await asyncio.to_thread(record.finished.wait, 5)
    assert record.outcome == "disconnected" and record.tokens_sent < 200
    await asker.close()
    await other_tab.close()


async def test_stale_claim_of_a_dead_process_is_recovered_as_interrupted():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    # A process stored this question, claimed the reply, and died.
    _, question = get_store().update(
        user.pk, conversation_id, lambda t: t.add_message(t.active_leaf, "user", "asked before the crash"))
    await sync_to_async(Conversation.objects.filter(pk=conversation_id).update)(
        reply_message="deadbeefdeadbeef", reply_parent=question.id, reply_model=ECHO_MODEL,
        reply_channel="reply.gone!dead", reply_heartbeat=timezone.now() - timedelta(seconds=30))
    ref = await socket.send("conversation.open", conversation=conversation_id)
    state = await socket.receive("conversation.state")
    assert state["ref"] == ref and state["generating"] is None
    lost = state["messages"][-1]
    assert (lost["id"], lost["parent"], lost["role"], lost["status"]) == (
        "deadbeefdeadbeef", question.id, "assistant", "interrupted")
    await socket.send("message.send", conversation=conversation_id, content="are you back?")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: are you back?"
    assert final["message"]["parent"] in get_store().load(user.pk, conversation_id).messages
    await socket.close()


async def test_message_send_recovers_a_stale_claim_without_an_open():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    leaf = get_store().load(user.pk, conversation_id).active_leaf
    await sync_to_async(Conversation.objects.filter(pk=conversation_id).update)(
        reply_message="deadbeefdeadbeef", reply_parent=leaf, reply_model=ECHO_MODEL,
        reply_channel="reply.gone!dead", reply_heartbeat=timezone.now() - timedelta(seconds=30))
    await socket.send("message.send", conversation=conversation_id, content="are you back?")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    assert get_store().load(user.pk, conversation_id).messages["deadbeefdeadbeef"].status == "interrupted"
    await socket.close()


async def test_fresh_claim_of_another_process_is_busy():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    leaf = get_store().load(user.pk, conversation_id).active_leaf
    await sync_to_async(Conversation.objects.filter(pk=conversation_id).update)(
        reply_message="livelivelivelive", reply_parent=leaf, reply_model=ECHO_MODEL,
        reply_channel="reply.elsewhere!x", reply_heartbeat=timezone.now())
    ref = await socket.send("message.send", conversation=conversation_id, content="too soon")
    frame = await socket.receive("error")
    assert (frame["code"], frame["ref"]) == ("busy", ref)
    await socket.close()


# --- Branches: regenerate, edit, switch -------------------------------------------------


async def test_open_while_a_dead_process_holds_a_fresh_claim_shows_its_checkpoint_then_the_interrupted_reply(settings):
    settings.CHAT_RESUME_TIMEOUT = 0.3
    settings.CHAT_REPLY_STALE_SECONDS = 1.0
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    leaf = get_store().load(user.pk, conversation_id).active_leaf
    await sync_to_async(Conversation.objects.filter(pk=conversation_id).update)(
        reply_message="livelivelivelive", reply_parent=leaf, reply_model=ECHO_MODEL,
        reply_channel="reply.elsewhere!x", reply_heartbeat=timezone.now(), reply_text="so far **bold**", reply_seq=4)
    ref = await socket.send("conversation.open", conversation=conversation_id)
    state = await socket.receive("conversation.state")
    assert state["ref"] == ref
    assert [m["role"] for m in state["messages"]] == ["user", "assistant"]
    generating = state["generating"]
    assert (generating["message"], generating["content"], generating["seq"]) == ("livelivelivelive", "so far **bold**", 4)
    assert "<strong>bold</strong>" in generating["html"]
    recovered = await socket.receive("conversation.state", timeout=5)
    assert recovered["generating"] is None
    last = recovered["messages"][-1]
    assert (last["id"], last["status"], last["content"]) == ("livelivelivelive", "interrupted", "so far **bold**")
    await socket.close()


async def test_regenerate_stores_a_sibling_reply_and_keeps_the_old_one():
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    question, old = get_store().load(user.pk, conversation_id).active_branch()
    other_tab = await watching_tab(user, conversation_id)
    ref = await asker.send("message.regenerate", conversation=conversation_id)
    assert (await asker.receive("conversation.updated"))["ref"] == ref
    started = await other_tab.receive("reply.started")
    assert started["parent"] == question.id and started["message"] != old.id
    _, final = await other_tab.reply_text()
    assert final["type"] == "reply.completed"
    assert final["message"]["siblings"] == [old.id, started["message"]]
    transcript = get_store().load(user.pk, conversation_id)
    assert [m.id for m in transcript.active_branch()] == [question.id, started["message"]]
    assert transcript.messages[old.id].content == old.content
    await asker.close()
    await other_tab.close()


async def test_edit_stores_a_sibling_and_replies_on_the_new_branch_without_retitling(fake_model):
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation("first question here")
    first, _ = get_store().load(user.pk, conversation_id).active_branch()
    titles_before = len(title_requests(fake_model))
    ref = await asker.send("message.edit", conversation=conversation_id, message=first.id, content="second question")
    created = await asker.receive("message.created")
    edited = created["message"]
    assert created["ref"] == ref and edited["parent"] is None and edited["siblings"] == [first.id, edited["id"]]
    started = await asker.receive("reply.started")
    assert started["parent"] == edited["id"]
    text, final = await asker.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: second question"
    await finish_replies()
    assert len(title_requests(fake_model)) == titles_before
    assert await asker.nothing_more()  # no conversation.updated with a new title
    transcript = get_store().load(user.pk, conversation_id)
    assert transcript.title == "first question here chat"
    assert [m.content for m in transcript.active_branch()] == ["second question", text]
    assert transcript.messages[first.id].content == "first question here"
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert row.title == "first question here chat"
    await asker.close()


async def test_a_failed_first_reply_titles_the_conversation_and_an_edit_keeps_that_title():
    """A first reply refused by the provider is titled at once from the user's words (no model
    call: chat/replies/titling.py); an edit afterwards, like any edit, keeps the title."""
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="plans for tonight #status=429")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    assert (await socket.reply_text())[1]["type"] == "reply.failed"
    titled = await socket.receive("conversation.updated")
    assert titled["conversation"]["title"].startswith("plans for tonight")
    first = get_store().load(user.pk, conversation_id).active_branch()[0]
    await socket.send("message.edit", conversation=conversation_id, message=first.id, content="plans for friday night")
    assert (await socket.reply_text())[1]["type"] == "reply.completed"
    await finish_replies()
    assert get_store().load(user.pk, conversation_id).title == titled["conversation"]["title"]
    await socket.close()


async def test_branch_switch_makes_the_old_branch_active_on_every_watching_tab():
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation("first question")
    first, first_reply = get_store().load(user.pk, conversation_id).active_branch()
    await asker.send("message.edit", conversation=conversation_id, message=first.id, content="second question")
    await asker.reply_text()
    other_tab = await watching_tab(user, conversation_id)
    ref = await asker.send("branch.switch", conversation=conversation_id, message=first.id)
    mine = await asker.receive("conversation.state")
    theirs = await other_tab.receive("conversation.state")
    assert mine["ref"] == ref and "ref" not in theirs
    for state in (mine, theirs):
        assert [m["id"] for m in state["messages"]] == [first.id, first_reply.id]
        assert len(state["messages"][0]["siblings"]) == 2 and state["generating"] is None
    assert get_store().load(user.pk, conversation_id).active_leaf == first_reply.id
    await asker.close()
    await other_tab.close()


# --- Settings of a conversation ------------------------------------------------------


async def test_rename_reaches_every_tab():
    user = await create_user()
    asker, other_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    ref = await asker.send("conversation.rename", conversation=conversation_id, title="  Plans   for Friday ")
    mine = await asker.receive("conversation.updated", ref=ref)
    theirs = await other_tab.receive("conversation.updated", conversation=mine["conversation"])
    assert "ref" not in theirs and mine["conversation"]["title"] == "Plans for Friday"
    assert get_store().load(user.pk, conversation_id).title == "Plans for Friday"
    await asker.close()
    await other_tab.close()


async def test_configure_reaches_every_tab_and_the_next_reply_uses_it(settings, fake_model):
    settings.HF_MODELS = [ECHO_MODEL, OTHER_MODEL]
    user = await create_user()
    asker, other_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    ref = await asker.send("conversation.configure", conversation=conversation_id, model=OTHER_MODEL,
                           system_prompt="Answer in French.")
    mine = await asker.receive("conversation.updated", ref=ref)
    theirs = await other_tab.receive("conversation.updated", conversation=mine["conversation"])
    assert "ref" not in theirs
    assert (mine["conversation"]["model"], mine["conversation"]["system_prompt"]) == (OTHER_MODEL, "Answer in French.")
    await asker.send("message.send", conversation=conversation_id, content="bonjour")
    assert (await asker.receive("reply.started"))["model"] == OTHER_MODEL
    _, final = await asker.reply_text()
    assert final["message"]["model"] == OTHER_MODEL
    request = fake_model.requests[-1]
    assert request["model"] == OTHER_MODEL
    assert request["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert request["messages"][-1] == {"role": "user", "content": "bonjour"}
    await asker.close()
    await other_tab.close()


async def test_message_with_another_model_switches_the_conversation_on_every_tab(settings, fake_model):
    settings.HF_MODELS = [ECHO_MODEL, OTHER_MODEL]
    user = await create_user()
    asker = await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    other_tab = await ChatSocket.connect(user)
    await asker.send("message.send", conversation=conversation_id, content="hi", model=OTHER_MODEL)
    updated = await other_tab.receive("conversation.updated")
    assert (updated["conversation"]["id"], updated["conversation"]["model"]) == (conversation_id, OTHER_MODEL)
    assert (await asker.receive("reply.started"))["model"] == OTHER_MODEL
    await asker.reply_text()
    assert fake_model.requests[-1]["model"] == OTHER_MODEL
    assert get_store().load(user.pk, conversation_id).model == OTHER_MODEL
    await asker.close()
    await other_tab.close()


async def test_delete_reaches_every_tab_and_removes_the_conversation():
    user = await create_user()
    asker, other_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    conversation_id = await asker.new_conversation()
    ref = await asker.send("conversation.delete", conversation=conversation_id)
    mine = await asker.receive("conversation.deleted")
    theirs = await other_tab.receive("conversation.deleted")
    assert mine == {"type": "conversation.deleted", "conversation": conversation_id, "ref": ref}
    assert theirs == {"type": "conversation.deleted", "conversation": conversation_id}
    with pytest.raises(ConversationNotFound):
        get_store().load(user.pk, conversation_id)
    assert not await sync_to_async(Conversation.objects.filter(pk=conversation_id).exists)()
    ref = await asker.send("conversation.open", conversation=conversation_id)
    error = await asker.receive("error")
    assert (error["code"], error["ref"]) == ("not_found", ref)
    fresh = await ChatSocket.connect(user)
    assert fresh.hello["conversations"] == []
    await fresh.close()
    await asker.close()
    await other_tab.close()


async def test_new_tab_lists_conversations_newest_first():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    first, second = await socket.new_conversation("first one"), await socket.new_conversation("second one")
    await socket.send("message.send", conversation=first, content="bump")
    await socket.reply_text()
    new_tab = await ChatSocket.connect(user)
    listed = new_tab.hello["conversations"]
    assert [c["id"] for c in listed] == [first, second]
    assert [c["title"] for c in listed] == ["first one chat", "second one chat"]
    await new_tab.close()
    await socket.close()


async def test_ping_is_answered_with_pong_and_ref():
    socket = await ChatSocket.connect(await create_user())
    ref = await socket.send("ping", ref="my-ping-1")
    assert ref == "my-ping-1"
    assert await socket.next_frame() == {"type": "pong", "ref": "my-ping-1"}
    await socket.send_raw('{"type": "ping"}')
    assert await socket.next_frame() == {"type": "pong"}
    await socket.close()
