"""Errors over the socket: every code the server can produce, each echoing the request's
`ref`; a bad frame never closes the socket and never changes stored data."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation
from chat.store import get_store
from tests.conftest import ECHO_MODEL
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]

LONG_REPLY = "#tokens=200 #delay=0.02"


async def stored(user, conversation_id: str) -> dict:
    """Everything kept about a conversation: its transcript and its database row."""
    row = await sync_to_async(Conversation.objects.values().get)(pk=conversation_id)
    return {"transcript": get_store().load(user.pk, conversation_id).to_dict(), "row": row}


async def expect_error(socket: ChatSocket, code: str, ref: str | None) -> dict:
    frame = await socket.next_frame()
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame.get("ref") == ref, frame
    assert frame["message"]
    return frame


async def answer_to(socket: ChatSocket, ref: str) -> dict:
    """The first frame that echoes `ref` (others, e.g. another tab's news, are skipped)."""
    while (frame := await socket.next_frame()).get("ref") != ref:
        pass
    return frame


async def still_open(socket: ChatSocket) -> None:
    ref = await socket.send("ping")
    assert await socket.next_frame() == {"type": "pong", "ref": ref}


# --- Frames that cannot be read ------------------------------------------------------

BAD_FRAMES = [
    pytest.param("this is not json", "invalid_json", None, id="not-json"),
    pytest.param('{"type": "ping", "ref": "r1"', "invalid_json", None, id="truncated-json"),
    pytest.param("[" * 20000 + "]" * 20000, "invalid_json", None, id="nested-too-deep"),
    pytest.param('["ping"]', "invalid_message", None, id="array"),
    pytest.param('"ping"', "invalid_message", None, id="string"),
    pytest.param("null", "invalid_message", None, id="null"),
    pytest.param('{"ref": "r1"}', "invalid_message", "r1", id="missing-type"),
    pytest.param('{"type": 7, "ref": "r1"}', "invalid_message", "r1", id="type-not-a-string"),
    pytest.param('{"type": "message.delete", "ref": "r1"}', "invalid_message", "r1", id="unknown-type"),
    pytest.param('{"type": "ping", "ref": 5}', "invalid_message", None, id="ref-not-a-string"),
    pytest.param(json.dumps({"type": "ping", "ref": "r" * 65}), "invalid_message", None, id="ref-over-64-chars"),
    pytest.param('{"type": "conversation.open", "ref": "r1"}', "invalid_message", "r1", id="missing-id"),
    pytest.param('{"type": "conversation.open", "conversation": 12, "ref": "r1"}', "invalid_message", "r1",
                 id="id-not-a-string"),
    pytest.param('{"type": "conversation.open", "conversation": "", "ref": "r1"}', "invalid_message", "r1",
                 id="id-empty"),
    pytest.param(json.dumps({"type": "conversation.open", "conversation": "c" * 65, "ref": "r1"}), "invalid_message",
                 "r1", id="id-over-64-chars"),
    pytest.param('{"type": "conversation.open", "conversation": null, "ref": "r1"}', "invalid_message", "r1",
                 id="open-null-id"),
    pytest.param('{"type": "message.send", "content": "hi", "ref": "r1"}', "invalid_message", "r1",
                 id="send-missing-conversation"),
    pytest.param('{"type": "message.send", "conversation": null, "ref": "r1"}', "invalid_message", "r1",
                 id="send-missing-content"),
    pytest.param('{"type": "message.send", "conversation": null, "content": ["hi"], "ref": "r1"}', "invalid_message",
                 "r1", id="send-content-not-a-string"),
    pytest.param('{"type": "message.send", "conversation": null, "content": "hi", "model": 3, "ref": "r1"}',
                 "invalid_message", "r1", id="send-model-not-a-string"),
    pytest.param('{"type": "message.edit", "conversation": "abc", "content": "hi", "ref": "r1"}', "invalid_message",
                 "r1", id="edit-missing-message"),
    pytest.param('{"type": "conversation.rename", "conversation": "abc", "title": null, "ref": "r1"}',
                 "invalid_message", "r1", id="rename-title-null"),
    pytest.param('{"type": "conversation.configure", "conversation": "abc", "system_prompt": 1, "ref": "r1"}',
                 "invalid_message", "r1", id="configure-prompt-not-a-string"),
]


@pytest.mark.parametrize("text, code, ref", BAD_FRAMES)
async def test_bad_frame_gets_an_error_and_the_socket_stays_open(text, code, ref):
    socket = await ChatSocket.connect(await create_user())
    await socket.send_raw(text)
    await expect_error(socket, code, ref)
    await still_open(socket)
    await socket.close()


@pytest.mark.parametrize("text, ref", [
    pytest.param('{"type": "message.send", "conversation": null, "content": "half \\ud83d emoji", "ref": "r1"}', "r1",
                 id="content"),
    pytest.param('{"type": "conversation.open", "conversation": "\\udc00", "ref": "r1"}', "r1", id="id"),
    pytest.param('{"type": "conversation.rename", "conversation": "abc", "title": "\\ud800", "ref": "r1"}', "r1",
                 id="title"),
    pytest.param('{"type": "ping", "ref": "\\ud83d"}', None, id="ref"),
])
async def test_lone_surrogate_is_invalid_message_and_the_socket_stays_open(text, ref):
    # Valid JSON (a browser's JSON.stringify of a string cut mid-emoji), but not Unicode
    # that a store, a database or a socket can encode.
    socket = await ChatSocket.connect(await create_user())
    await socket.send_raw(text)
    await expect_error(socket, "invalid_message", ref)
    await still_open(socket)
    assert await sync_to_async(Conversation.objects.count)() == 0
    await socket.close()


async def test_escaped_surrogate_pair_is_accepted():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send_raw('{"type": "message.send", "conversation": null, "content": "smile \\ud83d\\ude00"}')
    created = await socket.receive("message.created")
    assert created["message"]["content"] == "smile \U0001F600"
    await socket.reply_text()
    await socket.close()


async def test_binary_frame_is_invalid_message():
    socket = await ChatSocket.connect(await create_user())
    await socket.communicator.send_to(bytes_data=b'{"type": "ping", "ref": "r1"}')
    await expect_error(socket, "invalid_message", None)
    await still_open(socket)
    await socket.close()


async def test_frame_over_max_frame_bytes_is_too_large(settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    socket = await ChatSocket.connect(await create_user())
    ref = await socket.send("ping", padding="x" * 1000)
    error = await socket.next_frame()
    assert (error["type"], error["code"]) == ("error", "too_large")
    assert error.get("ref") in (None, ref)  # an unread frame's ref is unknown; echoing it would be a bonus
    await socket.send("ping", padding="x" * 900)  # under the limit: served
    assert (await socket.next_frame())["type"] == "pong"
    await socket.close()


async def test_frame_limit_counts_utf8_bytes_not_characters(settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    socket = await ChatSocket.connect(await create_user())
    await socket.send_raw(json.dumps({"type": "ping", "padding": "é" * 600}, ensure_ascii=False))  # 600 chars, 1200 bytes
    await expect_error(socket, "too_large", None)
    await still_open(socket)
    await socket.close()


async def test_bad_frames_change_no_stored_data(settings):
    settings.CHAT_MAX_FRAME_BYTES = 2000
    settings.CHAT_MAX_CONTENT_CHARS = 100
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    before = await stored(user, conversation_id)
    frames = [param.values[0] for param in BAD_FRAMES if param.id != "nested-too-deep"] + [
        json.dumps({"type": "message.send", "conversation": conversation_id, "content": "x" * 5000}),
        json.dumps({"type": "message.send", "conversation": conversation_id, "content": 5}),
        json.dumps({"type": "message.send", "conversation": conversation_id, "content": " \n\t "}),
        json.dumps({"type": "message.send", "conversation": conversation_id, "content": "x" * 101}),
        json.dumps({"type": "conversation.rename", "conversation": conversation_id, "title": "  "}),
        json.dumps({"type": "conversation.rename", "conversation": conversation_id, "title": 3}),
        json.dumps({"type": "conversation.configure", "conversation": conversation_id, "model": "no/such-model"}),
        json.dumps({"type": "conversation.delete", "conversation": conversation_id + "0"}),
        json.dumps({"type": "branch.switch", "conversation": conversation_id, "message": "nosuchmessage"}),
    ]
    for text in frames:
        await socket.send_raw(text)
        assert (await socket.next_frame())["type"] == "error", text
    await socket.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await socket.next_frame())["type"] == "error"
    await still_open(socket)
    assert await stored(user, conversation_id) == before
    await socket.close()


# --- Messages the server refuses --------------------------------------------------------


async def test_empty_message_is_invalid_message_and_creates_nothing():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    ref = await socket.send("message.send", conversation=None, content=" \n\t ")
    await expect_error(socket, "invalid_message", ref)
    assert await sync_to_async(Conversation.objects.count)() == 0
    await still_open(socket)
    await socket.close()


async def test_message_over_max_content_chars_is_too_large(settings):
    settings.CHAT_MAX_CONTENT_CHARS = 100
    user = await create_user()
    socket = await ChatSocket.connect(user)
    ref = await socket.send("message.send", conversation=None, content="x" * 101)
    await expect_error(socket, "too_large", ref)
    assert await sync_to_async(Conversation.objects.count)() == 0
    await socket.send("message.send", conversation=None, content="x" * 100)  # exactly the limit: accepted
    await socket.receive("conversation.created")
    await socket.reply_text()
    await socket.close()


async def test_title_and_system_prompt_over_their_limits_are_too_large(settings):
    settings.CHAT_MAX_TITLE_CHARS = 10
    settings.CHAT_MAX_SYSTEM_PROMPT_CHARS = 10
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    before = await stored(user, conversation_id)
    ref = await socket.send("conversation.rename", conversation=conversation_id, title="t" * 11)
    await expect_error(socket, "too_large", ref)
    ref = await socket.send("conversation.configure", conversation=conversation_id, system_prompt="p" * 11)
    await expect_error(socket, "too_large", ref)
    assert await stored(user, conversation_id) == before
    await socket.close()


async def test_unknown_model_is_model_unavailable():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    ref = await socket.send("message.send", conversation=None, content="hi", model="no/such-model")
    await expect_error(socket, "model_unavailable", ref)
    assert await sync_to_async(Conversation.objects.count)() == 0
    conversation_id = await socket.new_conversation()
    before = await stored(user, conversation_id)
    ref = await socket.send("message.send", conversation=conversation_id, content="hi", model="no/such-model")
    await expect_error(socket, "model_unavailable", ref)
    ref = await socket.send("conversation.configure", conversation=conversation_id, model="no/such-model")
    await expect_error(socket, "model_unavailable", ref)
    assert await stored(user, conversation_id) == before
    await socket.close()


async def test_model_without_credentials_is_model_unavailable(settings):
    settings.HF_BASE_URL = ""  # and no HF_TOKEN: the remote model cannot be called
    socket = await ChatSocket.connect(await create_user())
    ref = await socket.send("message.send", conversation=None, content="hi", model=ECHO_MODEL)
    await expect_error(socket, "model_unavailable", ref)
    await socket.close()


# --- Other users' conversations and unknown ids ------------------------------------------


async def test_another_users_conversation_is_not_found_for_every_request():
    alice, bob = await create_user("alice"), await create_user("bob")
    bobs = await ChatSocket.connect(bob)
    bobs_conversation = await bobs.new_conversation("bob's secret")
    bobs_messages = get_store().load(bob.pk, bobs_conversation).active_branch()
    before = await stored(bob, bobs_conversation)
    socket = await ChatSocket.connect(alice)
    requests = [
        ("conversation.open", {}),
        ("message.send", {"content": "mine now"}),
        ("message.edit", {"message": bobs_messages[0].id, "content": "mine now"}),
        ("message.regenerate", {}),
        ("conversation.rename", {"title": "mine now"}),
        ("conversation.delete", {}),
        ("conversation.configure", {"system_prompt": "mine now"}),
        ("generation.stop", {}),
        ("branch.switch", {"message": bobs_messages[0].id}),
    ]
    for type, fields in requests:
        ref = await socket.send(type, conversation=bobs_conversation, **fields)
        error = await expect_error(socket, "not_found", ref)
        assert "bob" not in error["message"]
    assert await stored(bob, bobs_conversation) == before
    assert await bobs.nothing_more()
    await socket.close()
    await bobs.close()


async def test_unknown_conversation_id_is_not_found():
    socket = await ChatSocket.connect(await create_user())
    ref = await socket.send("conversation.open", conversation="0123456789abcdef0123456789abcdef")
    await expect_error(socket, "not_found", ref)
    ref = await socket.send("message.send", conversation="../../etc/passwd", content="hi")
    await expect_error(socket, "not_found", ref)
    await socket.close()


async def test_message_id_not_in_the_conversation_is_not_found():
    alice, bob = await create_user("alice"), await create_user("bob")
    bobs = await ChatSocket.connect(bob)
    bobs_message = get_store().load(bob.pk, await bobs.new_conversation()).active_branch()[0].id
    socket = await ChatSocket.connect(alice)
    conversation_id = await socket.new_conversation()
    reply_id = get_store().load(alice.pk, conversation_id).active_branch()[1].id
    before = await stored(alice, conversation_id)
    for message_id in ("nosuchmessage", bobs_message):
        ref = await socket.send("message.edit", conversation=conversation_id, message=message_id, content="new")
        await expect_error(socket, "not_found", ref)
        ref = await socket.send("branch.switch", conversation=conversation_id, message=message_id)
        await expect_error(socket, "not_found", ref)
    ref = await socket.send("message.edit", conversation=conversation_id, message=reply_id, content="new")
    await expect_error(socket, "not_found", ref)  # only a user message can be edited
    assert await stored(alice, conversation_id) == before
    # The refused edits released the conversation: the next message is served.
    await socket.send("message.send", conversation=conversation_id, content="still here")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    await socket.close()
    await bobs.close()


# --- One reply at a time per conversation ---------------------------------------------


async def test_busy_while_a_reply_runs_but_other_conversations_are_not_blocked():
    user = await create_user()
    socket, other_tab = await ChatSocket.connect(user), await ChatSocket.connect(user)
    other_conversation = await socket.new_conversation()
    await socket.send("message.send", conversation=None, content=LONG_REPLY)
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    first_message = (await socket.receive("message.created"))["message"]["id"]
    await socket.receive("reply.delta")
    for type, fields in [
        ("message.send", {"content": "another"}),
        ("message.edit", {"message": first_message, "content": "edited"}),
        ("message.regenerate", {}),
        ("branch.switch", {"message": first_message}),
        ("conversation.delete", {}),
    ]:
        ref = await socket.send(type, conversation=conversation_id, **fields)
        frame = await socket.receive("error")
        assert (frame["code"], frame["ref"]) == ("busy", ref), type
    # The same user's other conversation is served meanwhile.
    await other_tab.send("message.send", conversation=other_conversation, content="meanwhile")
    await other_tab.receive("message.created")
    text, final = await other_tab.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: meanwhile"
    await socket.send("generation.stop", conversation=conversation_id)
    final = await socket.receive("reply.completed")
    assert final["stopped"] is True
    transcript = get_store().load(user.pk, conversation_id)
    assert [m.content for m in transcript.messages.values() if m.role == "user"] == [LONG_REPLY]
    await socket.close()
    await other_tab.close()


async def test_busy_message_with_another_model_changes_nothing(settings):
    settings.HF_MODELS = [ECHO_MODEL, "test/other"]
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content=LONG_REPLY)
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    await socket.receive("reply.delta")
    ref = await socket.send("message.send", conversation=conversation_id, content="switch", model="test/other")
    frame = await socket.receive("error")
    assert (frame["code"], frame["ref"]) == ("busy", ref)
    assert get_store().load(user.pk, conversation_id).model == ECHO_MODEL
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert row.model == ECHO_MODEL
    await socket.send("generation.stop", conversation=conversation_id)
    await socket.receive("reply.completed")
    await socket.close()


async def test_racing_messages_in_one_conversation_start_one_reply():
    user = await create_user()
    first_tab = await ChatSocket.connect(user)
    conversation_id = await first_tab.new_conversation()
    tabs = [first_tab, await ChatSocket.connect(user), await ChatSocket.connect(user)]
    # The winner's reply lasts a second: the other two sends come while it runs, not after
    # it has finished (an instant reply could free the conversation before the third send).
    refs = await asyncio.gather(*(tab.send("message.send", conversation=conversation_id,
                                           content=f"#tokens=20 #delay=0.05 tab {i}")
                                  for i, tab in enumerate(tabs)))
    answers = [await answer_to(tab, ref) for tab, ref in zip(tabs, refs)]
    assert sorted(a["type"] for a in answers) == ["error", "error", "message.created"], answers
    assert all(a["code"] == "busy" for a in answers if a["type"] == "error")
    winner = tabs[[a["type"] for a in answers].index("message.created")]
    _, final = await winner.reply_text()
    assert final["type"] == "reply.completed"
    transcript = get_store().load(user.pk, conversation_id)
    assert [m.role for m in transcript.messages.values()] == ["user", "assistant", "user", "assistant"]
    for tab in tabs:
        await tab.close()


async def test_stop_without_a_reply_is_invalid_message():
    socket = await ChatSocket.connect(await create_user())
    conversation_id = await socket.new_conversation()
    ref = await socket.send("generation.stop", conversation=conversation_id)
    await expect_error(socket, "invalid_message", ref)
    await socket.close()


# --- Rate limits ----------------------------------------------------------------------


async def test_burst_of_frames_is_rate_limited_with_retry_after(settings):
    settings.CHAT_RATE_LIMIT_FRAMES = 5
    settings.CHAT_RATE_LIMIT_WINDOW = 30.0
    socket = await ChatSocket.connect(await create_user())
    for _ in range(5):
        await socket.send("ping")
        assert (await socket.next_frame())["type"] == "pong"
    ref = await socket.send("ping")
    error = await expect_error(socket, "rate_limited", ref)
    assert 0 < error["retry_after"] <= 30
    ref = await socket.send("ping")  # still refused, still open
    await expect_error(socket, "rate_limited", ref)
    await socket.close()


async def test_frame_limit_lifts_after_retry_after(settings):
    settings.CHAT_RATE_LIMIT_FRAMES = 2
    settings.CHAT_RATE_LIMIT_WINDOW = 0.5
    socket = await ChatSocket.connect(await create_user())
    for _ in range(2):
        await socket.send("ping")
        await socket.next_frame()
    await socket.send("ping")
    error = await socket.next_frame()
    assert error["code"] == "rate_limited"
    await asyncio.sleep(error["retry_after"] + 0.05)
    await still_open(socket)
    await socket.close()


async def test_bad_frames_count_towards_the_frame_limit(settings):
    settings.CHAT_RATE_LIMIT_FRAMES = 3
    socket = await ChatSocket.connect(await create_user())
    for _ in range(3):
        await socket.send_raw("garbage")
        await expect_error(socket, "invalid_json", None)
    ref = await socket.send("ping")
    await expect_error(socket, "rate_limited", ref)
    await socket.close()


async def test_one_users_burst_does_not_limit_another_user(settings):
    settings.CHAT_RATE_LIMIT_FRAMES = 3
    noisy, quiet = await ChatSocket.connect(await create_user("alice")), await ChatSocket.connect(await create_user("bob"))
    for _ in range(4):
        await noisy.send("ping")
    assert [(await noisy.next_frame())["type"] for _ in range(4)] == ["pong", "pong", "pong", "error"]
    await still_open(quiet)
    await noisy.close()
    await quiet.close()


async def test_too_many_replies_per_minute_is_rate_limited(settings):
    settings.CHAT_RATE_LIMIT_MESSAGES = 1
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    before = await stored(user, conversation_id)
    ref = await socket.send("message.send", conversation=conversation_id, content="one more")
    error = await expect_error(socket, "rate_limited", ref)
    assert 0 < error["retry_after"] <= 60
    assert await stored(user, conversation_id) == before
    await socket.close()


# --- Model failures -------------------------------------------------------------------


@pytest.mark.parametrize("directives, code, retry_after, partial", [
    pytest.param("#status=401", "model_unavailable", None, "", id="401"),
    pytest.param("#status=429 #retry_after=7", "rate_limited", 7, "", id="429"),
    pytest.param("#tokens=10 #cut=3", "model_failed", None, "w0 w1 w2", id="cut"),
    pytest.param("#tokens=10 #fail=3", "model_failed", None, "w0 w1 w2", id="error-event"),
])
async def test_model_failure_gives_reply_failed_and_keeps_the_user_message(directives, code, retry_after, partial):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    ref = await socket.send("message.send", conversation=None, content=f"question {directives}")
    conversation_id = (await socket.receive("conversation.created", ref=ref))["conversation"]["id"]
    text, failed = await socket.reply_text()
    assert failed["type"] == "reply.failed"
    assert failed["error"]["code"] == code and failed["error"]["message"]
    assert failed["error"].get("retry_after") == retry_after
    assert failed["message"]["status"] == "failed" and failed["message"]["content"] == partial == text
    transcript = get_store().load(user.pk, conversation_id)
    question, reply = transcript.active_branch()
    assert (question.role, question.content) == ("user", f"question {directives}")
    assert (reply.id, reply.status, reply.content, reply.error["code"]) == (failed["message"]["id"], "failed", partial, code)
    # The conversation is free again: the next message gets a reply.
    await socket.send("message.send", conversation=conversation_id, content="again")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: again"
    await socket.close()


# --- Storage outages ----------------------------------------------------------------


class Outage:
    """Takes the transcript folder away (a regular file stands in its place) and back."""

    def __init__(self, folder):
        self.folder = folder
        self.away = folder.with_name(folder.name + ".away")

    def down(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.rename(self.away)
        self.folder.write_text("not a folder")

    def up(self) -> None:
        self.folder.unlink()
        self.away.rename(self.folder)


@pytest.fixture
def outage(settings):
    return Outage(settings.CHAT_DATA_DIR)


async def test_new_conversation_while_storage_is_down_is_storage_unavailable(outage):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    outage.down()
    ref = await socket.send("message.send", conversation=None, content="hello")
    await expect_error(socket, "storage_unavailable", ref)
    assert await sync_to_async(Conversation.objects.count)() == 0
    outage.up()
    await socket.send("message.send", conversation=None, content="hello")
    await socket.receive("conversation.created")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    await socket.close()


async def test_message_while_storage_is_down_is_storage_unavailable_then_the_next_one_works(outage):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    outage.down()
    ref = await socket.send("message.send", conversation=conversation_id, content="lost?")
    await expect_error(socket, "storage_unavailable", ref)
    ref = await socket.send("conversation.open", conversation=conversation_id)
    await expect_error(socket, "storage_unavailable", ref)
    ref = await socket.send("conversation.rename", conversation=conversation_id, title="New name")
    await expect_error(socket, "storage_unavailable", ref)
    outage.up()
    await socket.send("message.send", conversation=conversation_id, content="after the outage")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: after the outage"
    contents = [m.content for m in get_store().load(user.pk, conversation_id).active_branch()]
    assert contents[2:] == ["after the outage", text]
    await socket.close()


async def test_reply_that_cannot_be_stored_fails_with_storage_unavailable(outage):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    await socket.send("message.send", conversation=conversation_id, content="#tokens=20 #delay=0.02")
    await socket.receive("reply.delta")
    outage.down()
    _, failed = await socket.reply_text()
    assert failed["type"] == "reply.failed" and failed["error"]["code"] == "storage_unavailable"
    outage.up()
    await socket.send("message.send", conversation=conversation_id, content="after the outage")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: after the outage"
    await socket.close()
