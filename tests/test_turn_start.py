"""How a turn starts its reply (issue 14, time to first token): the conversation's row,
its count, claim and write are one worker-thread call, the first token goes out alone,
and a turn that changes or fails during its write never shows a reply to the wrong
messages."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat import quotas, services
from chat.models import Conversation
from chat.store import StorageUnavailable, get_store
from chat.store.contract import encode
from tests.conftest import record_worker_calls
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]

FRENCH = "Answer in French."


async def test_the_first_token_of_a_burst_goes_out_alone():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    # The scripted model writes all 20 pieces at once: they arrive in one read.
    await socket.send("message.send", conversation=conversation_id, content="#tokens=20")
    first = await socket.receive("reply.delta")
    assert (first["seq"], first["delta"]) == (0, "w0")
    rest, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    assert first["delta"] + rest == final["message"]["content"] == "".join(f" w{i}" if i else "w0" for i in range(20))
    await socket.close()


async def test_the_model_request_goes_out_before_the_turns_frames_are_made(monkeypatch):
    """The model reads the prompt while this process announces the user message and starts
    the reply (services.Turn.begin); the frames still come in their order."""
    from chat import events
    from chat.backends.remote import HFBackend

    order = []
    connect, message_created = HFBackend._connect, events.message_created

    async def connecting(self, model_id, messages, max_tokens):
        order.append(("model request", messages[-1]["content"]))
        return await connect(self, model_id, messages, max_tokens)

    async def announcing(row, message, **kwargs):
        order.append(("message.created", message["content"]))
        return await message_created(row, message, **kwargs)

    monkeypatch.setattr(HFBackend, "_connect", connecting)
    monkeypatch.setattr(events, "message_created", announcing)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    await socket.send("message.send", conversation=conversation_id, content="#tokens=5")
    frames = [await socket.receive("message.created"), await socket.receive("reply.started")]
    text, final = await socket.reply_text()
    assert [event for event, content in order if content == "#tokens=5"] == ["model request", "message.created"]
    assert [frame["type"] for frame in frames] == ["message.created", "reply.started"]
    assert final["type"] == "reply.completed" and text == " ".join(f"w{i}" for i in range(5))
    await socket.close()


@pytest.fixture
def system_prompt_changed_during_the_write(monkeypatch):
    """Another writer changes the system prompt just before this turn's first write lands,
    so the store re-applies the turn to the new transcript. (The folder store serialises
    its writers and never loses a race; S3's conditional write does, and this write
    answers as it would.)"""
    store = get_store()
    write = type(store)._write
    raced = []

    def racing_write(self, user_id, conversation_id, body, version):
        if not raced and b"ask me" in body:
            raced.append(True)
            other, _ = self._read(user_id, conversation_id)
            other.system_prompt = FRENCH
            assert write(self, user_id, conversation_id, encode(other), version)
            return False  # lost the race, as a conditional write to S3 would: read again, apply again
        return write(self, user_id, conversation_id, body, version)

    monkeypatch.setattr(type(store), "_write", racing_write)
    return raced


async def test_a_turn_whose_write_is_retried_answers_the_stored_messages(
        fake_model, system_prompt_changed_during_the_write):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    fake_model.clear()
    await socket.send("message.send", conversation=conversation_id, content="ask me")
    text, final = await socket.reply_text()
    assert system_prompt_changed_during_the_write, "the other writer never came"
    assert final["type"] == "reply.completed" and text == "Echo: ask me"
    (request,) = await asyncio.to_thread(fake_model.settled, 1)
    assert request.body["messages"][0] == {"role": "system", "content": FRENCH}
    stored = await sync_to_async(get_store().load)(user.pk, conversation_id)
    assert stored.system_prompt == FRENCH and [m.content for m in stored.active_branch()][-2:] == ["ask me", text]
    await socket.close()


async def test_a_turn_that_cannot_be_written_gets_no_reply_costs_nothing_and_frees_the_conversation(
        fake_model, settings, monkeypatch):
    settings.HF_DAILY_REQUESTS_PER_USER = 10
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    used = await sync_to_async(quotas._used)(user.pk)
    before = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    store = get_store()
    write = type(store)._write

    def failing_write(self, user_id, conversation_id, body, version):
        raise StorageUnavailable("the disk is gone")

    monkeypatch.setattr(type(store), "_write", failing_write)
    fake_model.clear()
    ref = await socket.send("message.send", conversation=conversation_id, content="lost? #tokens=50 #delay=0.02")
    error = await socket.receive("error", ref=ref)
    assert error["code"] == "storage_unavailable"
    assert await socket.nothing_more()  # no reply.started, no delta
    assert fake_model.requests == []  # the model was never asked
    assert await sync_to_async(quotas._used)(user.pk) == used  # given back
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert row.reply_message is None and row.updated_at == before.updated_at  # not moved up the sidebar

    monkeypatch.setattr(type(store), "_write", write)
    await socket.send("message.send", conversation=conversation_id, content="after")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: after"
    await socket.close()


@pytest.mark.parametrize("frame", ["message.send", "message.edit", "message.regenerate"])
async def test_a_turn_in_a_conversation_starts_with_one_worker_call(monkeypatch, frame):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation("first question")
    first = get_store().load(user.pk, conversation_id).active_branch()[0]
    calls = record_worker_calls(monkeypatch, services)
    fields = {"message.send": {"content": "second question"}, "message.regenerate": {},
              "message.edit": {"message": first.id, "content": "other words"}}[frame]
    await socket.send(frame, conversation=conversation_id, **fields)
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text.startswith("Echo: ")
    assert calls == ["_load_charge_claim_store"]
    assert final["message"]["id"] in get_store().load(user.pk, conversation_id).messages
    await socket.close()


async def test_a_turn_in_another_users_conversation_is_not_found_and_charges_nothing(settings):
    settings.HF_DAILY_REQUESTS_PER_USER = 10
    owner = await create_user("owner")
    other = await create_user("other")
    owner_socket = await ChatSocket.connect(owner)
    conversation_id = await owner_socket.new_conversation()
    socket = await ChatSocket.connect(other)
    used = await sync_to_async(quotas._used)(other.pk)
    ref = await socket.send("message.send", conversation=conversation_id, content="not mine")
    error = await socket.receive("error", ref=ref)
    assert error["code"] == "not_found"
    assert await socket.nothing_more()
    assert await sync_to_async(quotas._used)(other.pk) == used
    stored = await sync_to_async(get_store().load)(owner.pk, conversation_id)
    assert [m.content for m in stored.active_branch()] == ["hello there world", "Echo: hello there world"]
    await owner_socket.close()
    await socket.close()


async def _deltas_by_task(monkeypatch) -> list[tuple[int, str, str]]:
    """(seq, delta, the name of the task that sent it) of every reply.delta broadcast."""
    from chat.replies.task import ReplyTask

    sent: list[tuple[int, str, str]] = []
    broadcast = ReplyTask._broadcast

    async def recording(self, frame):
        if frame["type"] == "reply.delta":
            sent.append((frame["seq"], frame["delta"], asyncio.current_task().get_name()))
        return await broadcast(self, frame)

    monkeypatch.setattr(ReplyTask, "_broadcast", recording)
    return sent


async def test_each_read_of_the_model_is_one_delta_sent_by_the_stream_itself(monkeypatch):
    """The backend awaits ModelStream.flush before each read: what the last read brought goes
    out then, in the stream task's own turn, without waking the sender task."""
    sent = await _deltas_by_task(monkeypatch)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    sent.clear()  # the conversation's first reply
    await socket.send("message.send", conversation=conversation_id, content="#tokens=6 #delay=0.05")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == final["message"]["content"] == "w0 w1 w2 w3 w4 w5"
    assert [(seq, delta) for seq, delta, _ in sent] == [(i, f" w{i}" if i else "w0") for i in range(6)]
    later = {task for seq, _, task in sent if seq > 0}  # the first may come before reply.started is out
    assert later and all(task.startswith("reply-stream-") for task in later), later
    await socket.close()


async def test_the_pieces_of_one_read_after_the_first_are_one_delta(monkeypatch):
    from chat.backends.chunked_body import ChunkedBody

    sent = await _deltas_by_task(monkeypatch)
    reads = []  # the body's data as it came: with the headers, then one item per read
    parse = ChunkedBody._parse

    def counting(self):
        data = parse(self)
        if data:
            reads.append(len(data))
        return data

    monkeypatch.setattr(ChunkedBody, "_parse", counting)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation()
    sent.clear()
    reads.clear()
    await socket.send("message.send", conversation=conversation_id, content="#tokens=20")  # written at once
    text, final = await socket.reply_text()
    assert text == final["message"]["content"] == "".join(f" w{i}" if i else "w0" for i in range(20))
    assert sent[0][1] == "w0"  # the first token alone, then at most one delta per read
    assert 2 <= len(sent) <= 1 + len(reads) < 20, (len(sent), reads)
    await socket.close()
