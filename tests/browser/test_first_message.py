"""Signing up and the first message: shown at once, streamed, titled, without a reload."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ChatPage, numbered_words

GENERATING_TEXT = """() => {
  const reply = [...document.querySelectorAll('[data-testid="message"][data-role="assistant"]')].pop();
  if (!reply || reply.dataset.status !== "generating") return null;
  return reply.querySelector('[data-testid="message-body"]').textContent;
}"""


@pytest.mark.browser
def test_sign_up_then_first_message_streams_and_gets_a_title(new_context):
    chat = ChatPage(new_context().new_page())
    chat.signup()  # through /accounts/signup/, straight to a new chat
    expect(chat.page).to_have_url(re.compile(r"/new/$"))
    expect(chat.by("empty-state")).to_be_visible()
    chat.page.evaluate("window.__sameDocument = true")

    chat.composer.fill("Hello streaming world #tokens=80 #delay=0.03")
    chat.composer.press("Enter")

    # The user's message is on screen at once (by the time the key press returns), before the server answers.
    assert chat.user_messages.count() == 1
    expect(chat.body(chat.user_messages.first)).to_have_text("Hello streaming world #tokens=80 #delay=0.03")
    expect(chat.composer).to_have_value("")

    # The reply streams: it is "generating" while its text grows.
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "generating")
    early = chat.page.wait_for_function(
        "() => { const t = (" + GENERATING_TEXT + ")(); return t && /\\bw3\\b/.test(t) ? t : null; }"
    ).json_value()
    later = chat.page.wait_for_function(
        "(before) => { const t = (" + GENERATING_TEXT + ")(); return t && t.length > before.length ? t : null; }",
        arg=early,
    ).json_value()
    assert later.startswith(early.rstrip())
    assert "w79" not in early

    expect(reply).to_have_attribute("data-status", "complete")
    expect(chat.body(reply)).to_have_text(numbered_words(80))
    conversation = chat.wait_for_conversation_url()

    # The title arrives in the sidebar (and the tab's title) without a reload.
    item = chat.sidebar_item(conversation)
    expect(item).to_have_class(re.compile(r"\bactive\b"))
    expect(item.locator(".conversation-title")).to_have_text("Hello streaming world chat")
    expect(chat.page).to_have_title(re.compile(r"^Hello streaming world chat"))
    assert chat.page.evaluate("window.__sameDocument") is True


@pytest.mark.browser
def test_a_suggestion_of_the_empty_state_fills_the_message_box_ready_to_send(chat):
    suggestions = chat.by("suggestion")
    expect(suggestions).not_to_have_count(0)
    first = suggestions.first
    text = first.get_attribute("data-suggestion")

    first.focus()  # by keyboard: Enter on the suggestion, then Enter in the message box
    chat.page.keyboard.press("Enter")
    expect(chat.composer).to_have_value(text)
    expect(chat.composer).to_be_focused()
    chat.page.keyboard.press("Enter")
    expect(chat.body(chat.user_messages.first)).to_have_text(text)
    expect(chat.by("empty-state")).to_be_hidden()
    expect(chat.replies.first).to_have_attribute("data-status", "complete")
