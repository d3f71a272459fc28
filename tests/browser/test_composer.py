"""The message box: a draft per conversation, copying a message of one's own."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect


@pytest.mark.browser
def test_each_conversation_keeps_its_own_draft_and_a_sent_message_can_be_copied(chat):
    page = chat.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    first = chat.start_chat("First conversation")
    chat.by("new-chat").click()
    second = chat.start_chat("Second conversation")

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
