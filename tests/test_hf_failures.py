"""Hugging Face failures end to end: what a user sees over the socket when the provider
fails. The backend's mapping is unit-tested in test_backends.py; 401, 429 (with
retry_after), a cut stream and an error event are in test_socket_errors.py. These are
the others: 403, 404, server errors (retried, then given up within a bounded time, or
recovered), and timeouts."""
from __future__ import annotations

import asyncio
import time

import pytest

from chat.backends import TIMEOUT_MESSAGE, hf_backend
from chat.store import get_store
from tests.sockets import ChatSocket, create_user, finish_replies

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def no_reply_left_running():
    yield
    await finish_replies()


@pytest.fixture
def quick_retries(monkeypatch):
    """The process's HF backend with a short retry budget, so a test takes a second."""
    backend = hf_backend()
    monkeypatch.setattr(backend, "retry_budget", 1.0)
    monkeypatch.setattr(backend, "first_backoff", 0.05)
    return backend


async def failed_reply(user, content: str) -> tuple[str, dict]:
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content=content)
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    _, final = await socket.reply_text(timeout=30)
    await socket.close()
    return conversation_id, final


@pytest.mark.parametrize("directive, words", [
    pytest.param("#status=403", "token", id="403-token-refused"),
    pytest.param("#status=404", "not served", id="404-model-not-served"),
])
async def test_refusals_are_model_unavailable_in_plain_words(directive, words, fake_model):
    user = await create_user()
    conversation_id, final = await failed_reply(user, f"question {directive}")
    assert final["type"] == "reply.failed"
    assert final["error"]["code"] == "model_unavailable"
    assert words in final["error"]["message"]
    assert "retry_after" not in final["error"]
    assert len(fake_model.requests) == 1  # a refusal is not retried
    reply = get_store().load(user.pk, conversation_id).active_branch()[-1]
    assert (reply.status, reply.error["code"]) == ("failed", "model_unavailable")


@pytest.mark.parametrize("status", [503, 500, 502])
async def test_server_errors_are_retried_then_model_failed_within_the_budget(status, fake_model, quick_retries):
    user = await create_user()
    started = time.monotonic()
    _, final = await failed_reply(user, f"question #status={status}")
    took = time.monotonic() - started
    assert final["type"] == "reply.failed"
    assert final["error"]["code"] == "model_failed" and f"HTTP {status}" in final["error"]["message"]
    assert len(fake_model.requests) >= 2  # retried with backoff ...
    assert took < quick_retries.retry_budget + 2  # ... and given up in bounded time


async def test_a_model_still_loading_recovers_within_the_retries(fake_model, quick_retries):
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="warming up #flaky=2")
    text, final = await socket.reply_text(timeout=30)
    assert final["type"] == "reply.completed" and text == "Echo: warming up"
    # The reply can reach the socket before the server has recorded how its answer ended.
    records = await asyncio.to_thread(fake_model.settled, 3)
    assert [r.outcome for r in records][:3] == ["error_status", "error_status", "completed"]
    await socket.close()


async def test_a_silent_model_times_out_as_model_failed(settings, fake_model):
    settings.HF_TIMEOUT = 0.5
    user = await create_user()
    started = time.monotonic()
    conversation_id, final = await failed_reply(user, "question #hang")
    assert time.monotonic() - started < 10
    assert final["type"] == "reply.failed"
    assert final["error"] == {"code": "model_failed", "message": TIMEOUT_MESSAGE}
    reply = get_store().load(user.pk, conversation_id).active_branch()[-1]
    assert reply.status == "failed"


async def test_a_model_that_stalls_mid_reply_keeps_the_partial_text(settings):
    settings.HF_TIMEOUT = 0.5
    user = await create_user()
    conversation_id, final = await failed_reply(user, "#tokens=5 #delay=3")
    assert final["type"] == "reply.failed"
    assert final["error"]["code"] == "model_failed" and final["error"]["message"] == TIMEOUT_MESSAGE
    assert final["message"]["content"] == "w0"
    assert get_store().load(user.pk, conversation_id).active_branch()[-1].content == "w0"
