"""Issue 15: a reply cut by the token limit says so and can be continued in the same
message; a reply waiting for the local model says how many are ahead; issue 16: NUL
from the model never reaches the store.

Run it on PostgreSQL too: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test.
"""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat import backends, conversations
from chat.backends import LOCAL_MODEL_ID
from chat.models import Conversation
from chat.store import get_store
from chat.titles import TITLE_PROMPT
from chat.transcript import Transcript
from tests.sockets import ChatSocket, create_user
from tests.test_local_queue import ScriptedLlama
from tests.test_socket_errors import expect_error, stored

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


@pytest.fixture
def short_replies(settings):
    """Replies are cut after 4 tokens: `#tokens=10` needs two Continues to be whole."""
    settings.CHAT_MAX_REPLY_TOKENS = 4
    return settings


async def cut_conversation(socket: ChatSocket, content: str = "#tokens=10") -> tuple[str, dict]:
    """A conversation whose first reply was cut: its id and the stored reply."""
    await socket.send("message.send", conversation=None, content=content)
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    _, final = await socket.reply_text()
    return conversation_id, final["message"]


async def test_reply_cut_by_the_token_limit_is_stored_and_shown_as_cut(short_replies):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id, reply = await cut_conversation(socket)
    assert reply["content"] == "w0 w1 w2 w3" and reply["status"] == "cut"
    assert (await socket.receive("conversation.updated"))["conversation"]["title"]  # a cut reply is titled too
    assert [m.status for m in get_store().load(user.pk, conversation_id).active_branch()] == [None, "cut"]
    await socket.send("conversation.open", conversation=conversation_id)
    state = await socket.receive("conversation.state")
    assert state["messages"][-1]["status"] == "cut" and state["generating"] is None
    await socket.close()


async def test_continue_grows_the_same_message_until_it_is_complete(short_replies, fake_model):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id, reply = await cut_conversation(socket)
    for expected, status in (("w0 w1 w2 w3 w4 w5 w6 w7", "cut"), ("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9", "complete")):
        await socket.send("message.continue", conversation=conversation_id)  # the last reply by default
        started = await socket.receive("reply.started")
        assert started["message"] == reply["id"] and started["continues"] is True
        assert expected.startswith(started["content"]) and started["html"]["append"] + started["html"]["tail"]
        text, final = await socket.reply_text()
        assert final["type"] == "reply.completed" and final["stopped"] is False
        assert started["content"] + text == final["message"]["content"] == expected
        assert final["message"]["id"] == reply["id"] and final["message"]["status"] == status
        assert final["message"]["siblings"] == [reply["id"]]  # the same message, not a new version
        asked = [body for body in fake_model.requests if body["messages"][-1]["role"] == "assistant"][-1]
        assert asked["messages"][-1] == {"role": "assistant", "content": started["content"]}
        assert asked["continue_final_message"] is True and asked["add_generation_prompt"] is False
    assert "continue_final_message" not in fake_model.requests[0]  # an ordinary reply
    transcript = get_store().load(user.pk, conversation_id)
    assert [(m.content, m.status) for m in transcript.active_branch()] == [("#tokens=10", None), (expected, "complete")]
    assert len(transcript.messages) == 2
    await socket.close()


async def test_a_tab_joining_a_continued_reply_has_the_old_text_and_every_delta(short_replies):
    user = await create_user()
    writer = await ChatSocket.connect(user)
    conversation_id, reply = await cut_conversation(writer, "#tokens=10 #delay=0.3")
    await writer.send("message.continue", conversation=conversation_id, message=reply["id"])
    await writer.receive("reply.delta", seq=0)  # the continuation is under way

    joiner = await ChatSocket.connect(user)
    await joiner.send("conversation.open", conversation=conversation_id)
    generating = (await joiner.receive("conversation.state"))["generating"]
    assert generating["message"] == reply["id"] and generating["content"].startswith("w0 w1 w2 w3 w4")
    assert generating["waiting"] is None
    deltas = []
    while (frame := await joiner.next_frame(10))["type"] != "reply.completed":
        assert frame["type"] in ("reply.delta", "conversation.updated"), frame  # the title may come late
        if frame["type"] == "reply.delta":
            deltas.append(frame)
    assert [d["seq"] for d in deltas] == list(range(generating["seq"], generating["seq"] + len(deltas)))
    assert generating["content"] + "".join(d["delta"] for d in deltas) == frame["message"]["content"]
    assert frame["message"]["content"] == "w0 w1 w2 w3 w4 w5 w6 w7" and frame["message"]["status"] == "cut"
    _, written = await writer.reply_text()
    assert written == frame
    await joiner.close()
    await writer.close()


async def test_continue_resumes_an_interrupted_reply_in_place():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation("#tokens=5")
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)

    def interrupt(transcript: Transcript) -> None:  # as a crashed process leaves it (chat/replies/claim.py)
        reply = transcript.active_branch()[-1]
        reply.content, reply.status = "w0 w1", "interrupted"

    await sync_to_async(conversations.update_transcript)(row, interrupt)
    await socket.send("message.continue", conversation=conversation_id)
    started = await socket.receive("reply.started")
    assert started["continues"] is True and started["content"] == "w0 w1"
    text, final = await socket.reply_text()
    assert text == " w2 w3 w4"
    assert final["message"]["content"] == "w0 w1 w2 w3 w4" and final["message"]["status"] == "complete"
    assert final["message"]["id"] == started["message"]
    await socket.close()


async def test_continue_is_refused_for_a_complete_reply_and_changes_nothing():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    await socket.send("conversation.open", conversation=conversation_id)
    user_message, reply = (await socket.receive("conversation.state"))["messages"]
    before = await stored(user, conversation_id)
    for name, fields in {"last": {}, "reply": {"message": reply["id"]}, "user message": {"message": user_message["id"]}}.items():
        await socket.send("message.continue", conversation=conversation_id, ref=name, **fields)
        error = await expect_error(socket, "invalid_message", name)
        assert "cut" in error["message"]
    await socket.send("message.continue", conversation=conversation_id, message="nope", ref="unknown")
    await expect_error(socket, "not_found", "unknown")
    assert await socket.nothing_more()
    assert await stored(user, conversation_id) == before
    await socket.close()


async def test_nul_written_by_the_model_is_stripped_before_storing():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="#reply=a%00b%00c%00%00")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    text, final = await socket.reply_text()
    assert text == final["message"]["content"] == "abc" and final["message"]["status"] == "complete"
    assert get_store().load(user.pk, conversation_id).active_branch()[-1].content == "abc"
    await socket.close()


# --- Waiting for the local model ------------------------------------------------------


@pytest.fixture
def scripted_local(settings, tmp_path, monkeypatch):
    """The local model offered, served by a scripted llama (tests/test_local_queue.py): each
    generation holds before its first token until its gate (its prompt) is opened."""
    model_file = tmp_path / "model.gguf"
    model_file.write_bytes(b"not read")
    settings.LOCAL_MODEL_PATH = str(model_file)
    settings.LOCAL_MODEL_MAX_QUEUED_REPLIES = 3
    backend = backends.LocalBackend()
    backend._llm = ScriptedLlama()
    backend._llm.gate(TITLE_PROMPT).set()
    monkeypatch.setattr(backends, "local_backend", lambda: backend)
    yield backend
    for gate in backend._llm.gates.values():  # a failing test must not leave a reply waiting
        gate.set()


async def running(backend: backends.LocalBackend) -> None:
    """Until a generation holds the model (its thread has its turn)."""
    def wait() -> bool:
        with backend.line._cond:
            return backend.line._cond.wait_for(lambda: backend.line.running is not None, 10)

    assert await asyncio.to_thread(wait), "no generation started"


async def test_a_reply_waiting_for_the_local_model_says_how_many_are_ahead(scripted_local):
    llm = scripted_local._llm
    alice, bob = await create_user("alice"), await create_user("bob")
    first = await ChatSocket.connect(alice)
    await first.send("message.send", conversation=None, content="first tokens=3", model=LOCAL_MODEL_ID)
    await first.receive("reply.started")
    await running(scripted_local)

    llm.gate("second tokens=2").set()  # it still waits for the first reply to end
    second = await ChatSocket.connect(bob)
    await second.send("message.send", conversation=None, content="second tokens=2", model=LOCAL_MODEL_ID)
    conversation_id = (await second.receive("conversation.created"))["conversation"]["id"]
    reply_id = (await second.receive("reply.started"))["message"]
    waiting = await second.receive("reply.waiting")
    assert waiting == {"type": "reply.waiting", "conversation": conversation_id, "message": reply_id, "ahead": 1}

    joiner = await ChatSocket.connect(bob)
    await joiner.send("conversation.open", conversation=conversation_id)
    generating = (await joiner.receive("conversation.state"))["generating"]
    assert generating["message"] == reply_id and generating["waiting"] == 1 and generating["content"] == ""

    llm.gate("first tokens=3").set()
    text, final = await first.reply_text()
    assert text == " t0 t1 t2" and final["message"]["status"] == "complete"
    for socket in (second, joiner):
        assert (await socket.receive("reply.waiting"))["ahead"] == 0  # the model has started on it
        text, final = await socket.reply_text()
        assert text == " t0 t1" and final["message"]["status"] == "complete"
    for socket in (first, second, joiner):
        await socket.close()


async def test_more_replies_than_the_local_cap_are_refused_as_busy_and_nothing_is_stored(scripted_local, settings):
    settings.LOCAL_MODEL_MAX_QUEUED_REPLIES = 1
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="held tokens=2", model=LOCAL_MODEL_ID)
    await socket.receive("reply.started")
    await running(scripted_local)

    ref = await socket.send("message.send", conversation=None, content="one more", model=LOCAL_MODEL_ID)
    error = await expect_error(socket, "busy", ref)
    assert "replies waiting for the local model" in error["message"]
    assert len(list(get_store().iter_ids())) == 1  # no second conversation

    scripted_local._llm.gate("held tokens=2").set()
    _, final = await socket.reply_text()
    assert final["message"]["status"] == "complete"
    await socket.close()


# --- The real local model -----------------------------------------------------------------


@pytest.mark.slow
async def test_the_local_model_continues_a_reply_cut_by_the_token_limit(settings):
    settings.LOCAL_MODEL_PATH = ""  # the bundled SmolLM2
    settings.CHAT_MAX_REPLY_TOKENS = 12
    info = backends.available_models()[0]
    assert info.available, info.reason  # fails, not skips, without llama_cpp or the model file
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, model=LOCAL_MODEL_ID,
                      content="Write a long story about a dragon who learns to bake bread.")
    conversation_id = (await socket.receive("conversation.created", timeout=120))["conversation"]["id"]
    _, cut = await socket.reply_text(timeout=120)
    assert cut["message"]["status"] == "cut" and cut["message"]["content"].strip()

    await socket.send("message.continue", conversation=conversation_id)
    started = await socket.receive("reply.started", timeout=120)
    assert started["continues"] is True and started["content"] == cut["message"]["content"]
    text, final = await socket.reply_text(timeout=120)
    assert text.strip(), "the model wrote nothing more"
    assert final["message"]["id"] == cut["message"]["id"]
    assert final["message"]["content"] == cut["message"]["content"] + text
    assert final["message"]["status"] in ("cut", "complete")
    await socket.close()
