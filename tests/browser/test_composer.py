"""The message box: a draft per conversation, its counter, copying a message of one's own, Enter on a phone."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, ChatPage


@pytest.mark.browser
def test_each_conversation_keeps_its_own_draft_and_a_sent_message_can_be_copied(chat):
    page = chat.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    first = chat.start_chat("First conversation")
    chat.by("new-chat").click()
    second = chat.start_chat("Second conversation")

    # With a mouse, a message's actions show on hover; the last message's always.
    page.mouse.move(0, 0)
    opacity = "(node) => getComputedStyle(node.querySelector('.message-actions')).opacity"
    assert chat.user_messages.first.evaluate(opacity) == "0"
    assert chat.replies.last.evaluate(opacity) == "1"

    # The character counter shows only near the limit.
    counter = chat.by("composer-counter")
    chat.composer.fill("Short")
    expect(counter).to_have_text("")
    limit = page.evaluate("JSON.parse(document.getElementById('chat-boot').textContent).limits.max_content_chars")
    chat.composer.fill("x" * (limit - 10))
    expect(counter).to_contain_text(f"{limit:,}")
    chat.composer.fill("")

    # A user message has its own Copy button.
    question = chat.user_messages.first
    question.hover()
    question.get_by_test_id("copy-message").click()
    page.wait_for_function("navigator.clipboard.readText().then((text) => text === 'Second conversation')")

    # Drafts follow their conversation, across switches and a reload, and sending clears them.
    chat.composer.fill("Half-written for the second")
    chat.sidebar_item(first).locator(".conversation-link").click()
    expect(page).to_have_url(re.compile(f"/c/{first}/$"))
    expect(chat.composer).to_have_value("")
    chat.composer.fill("Draft for the first")
    chat.by("new-chat").click()
    expect(chat.composer).to_have_value("")
    chat.composer.fill("A new chat's draft")
    chat.sidebar_item(second).locator(".conversation-link").click()
    expect(chat.composer).to_have_value("Half-written for the second")
    chat.sidebar_item(first).locator(".conversation-link").click()
    expect(chat.composer).to_have_value("Draft for the first")
    chat.reload()
    expect(chat.composer).to_have_value("Draft for the first")
    chat.by("new-chat").click()
    expect(chat.composer).to_have_value("A new chat's draft")

    chat.sidebar_item(first).locator(".conversation-link").click()
    expect(chat.composer).to_have_value("Draft for the first")
    chat.send_button.click()
    expect(chat.user_messages).to_have_count(2)
    expect(chat.composer).to_have_value("")
    expect(chat.replies.last).to_have_attribute("data-status", "complete")
    chat.reload()
    expect(chat.composer).to_have_value("")


@pytest.mark.browser
def test_on_a_phone_enter_writes_a_new_line_and_the_send_button_sends(new_context):
    chat = ChatPage(new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()).signup()
    expect(chat.by("composer-status")).to_contain_text("Enter for a new line")
    chat.composer.tap()
    chat.page.keyboard.type("First line")
    chat.page.keyboard.press("Enter")
    chat.page.keyboard.type("Second line")
    expect(chat.composer).to_have_value("First line\nSecond line")
    expect(chat.user_messages).to_have_count(0)

    chat.send_button.tap()
    expect(chat.body(chat.user_messages.first)).to_have_text("First line\nSecond line")
    expect(chat.composer).to_have_value("")
