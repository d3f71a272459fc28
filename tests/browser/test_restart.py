"""A server restart mid-reply (a deploy, Heroku's daily restart) keeps the reply's text (issue 15)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ChatPage, start_live_server, word_numbers


@pytest.fixture(scope="module")
def restartable(tmp_path_factory, fake_model):
    """A server of this module's own: the test stops it (SIGTERM) and starts it again on the same port."""
    server = start_live_server(tmp_path_factory.mktemp("browser-sigterm"), fake_model.url)
    yield server
    server.stop()


@pytest.mark.browser
def test_a_reply_survives_a_server_restart_mid_reply_marked_interrupted_and_continues(restartable, new_context):
    chat = ChatPage(new_context(server=restartable).new_page()).signup()
    chat.send("A long one please #tokens=2000 #delay=0.02")
    reply = chat.replies.first
    expect(chat.body(reply)).to_contain_text("w40")
    expect(reply).to_have_attribute("data-status", "generating")
    shown = chat.body(reply).inner_text()

    restartable.stop()  # SIGTERM, as Heroku and systemd send it
    expect(chat.status).to_have_attribute("data-state", re.compile(r"^(reconnecting|offline)$"))
    restartable.start()  # the same port
    expect(chat.status).to_have_attribute("data-state", "connected", timeout=30_000)

    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "interrupted")
    expect(reply.get_by_test_id("message-status")).to_have_text("Interrupted")
    kept = chat.body(reply).inner_text()
    numbers = word_numbers(kept)
    assert numbers == list(range(len(numbers))), kept
    assert len(numbers) >= len(word_numbers(shown)) and len(numbers) < 2000, (shown, kept)
    expect(chat.by("composer-form")).to_have_attribute("data-state", "ready")  # the conversation is not locked

    chat.reload()  # what is stored, not only what the page kept
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "interrupted")
    expect(chat.body(reply)).to_have_text(kept)

    expect(reply.get_by_test_id("regenerate")).to_be_visible()
    reply.get_by_test_id("continue").click()  # the model writes on in the same message, at once
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "generating")
    expect(chat.body(reply)).to_contain_text(f"w{len(numbers) + 5}")
    chat.by("stop").click()
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(chat.replies).to_have_count(1)
    continued = word_numbers(chat.body(reply).inner_text())
    assert continued == list(range(len(continued))) and len(continued) > len(numbers) + 5, continued[-5:]
