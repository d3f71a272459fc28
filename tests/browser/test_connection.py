"""The connection indicator and the composer while the server is away, and after it is back."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ChatPage, start_live_server

MESSAGE_IDS = "() => [...document.querySelectorAll('[data-testid=\"message\"]')].map((m) => m.dataset.id)"


@pytest.fixture(scope="module")
def restartable(tmp_path_factory, fake_model):
    """A server of this module's own: the test stops it and starts it again on the same port."""
    server = start_live_server(tmp_path_factory.mktemp("browser-restart"), fake_model.url)
    yield server
    server.stop()


@pytest.mark.browser
def test_the_indicator_and_the_composer_follow_the_server_going_away_and_back(restartable, new_context):
    chat = ChatPage(new_context(server=restartable).new_page()).signup()
    conversation = chat.start_chat("Before the outage")
    expect(chat.status).to_contain_text("Connected")
    before = chat.page.evaluate(MESSAGE_IDS)
    assert len(before) == 2
    chat.composer.fill("After the outage")
    expect(chat.send_button).to_be_enabled()

    restartable.stop()
    expect(chat.status).to_have_attribute("data-state", re.compile(r"^(reconnecting|offline)$"))
    expect(chat.status).to_contain_text(re.compile(r"Reconnecting|Offline"))
    expect(chat.send_button).to_be_disabled()
    expect(chat.by("composer-form")).to_have_attribute("data-state", "blocked")
    expect(chat.by("composer-status")).to_have_text(re.compile(r"connection was lost|offline", re.I))
    chat.composer.press("Enter")  # refused while offline: the draft stays, nothing is added
    expect(chat.composer).to_have_value("After the outage")
    expect(chat.messages).to_have_count(2)

    restartable.start()  # the same port
    expect(chat.status).to_have_attribute("data-state", "connected", timeout=30_000)
    expect(chat.status).to_contain_text("Connected")
    expect(chat.by("composer-form")).to_have_attribute("data-state", "ready")
    expect(chat.messages).to_have_count(2)
    assert chat.page.evaluate(MESSAGE_IDS) == before
    expect(chat.page).to_have_url(re.compile(f"/c/{conversation}/$"))

    chat.send_button.click()
    expect(chat.replies).to_have_count(2)
    expect(chat.replies.last).to_have_attribute("data-status", "complete")
    expect(chat.body(chat.replies.last)).to_have_text("Echo: After the outage")
    expect(chat.messages).to_have_count(4)
    after = chat.page.evaluate(MESSAGE_IDS)
    assert after[:2] == before and len(set(after)) == 4
    chat.reload()
    assert chat.page.evaluate(MESSAGE_IDS) == after
