"""Two windows of one user stay in step: sidebar, messages, streamed replies, titles."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import numbered_words


@pytest.mark.browser
def test_a_message_sent_in_one_window_shows_in_the_other(chat, new_context):
    other = chat.second_window(new_context).goto("/new/")

    # A new conversation started in the first window appears in the other's sidebar.
    chat.send("Sync me please #tokens=200 #delay=0.02")
    conversation = chat.wait_for_conversation_url()
    item = other.sidebar_item(conversation)
    expect(item).to_be_visible()

    # Opened there while its first reply is being written: the user message, the reply
    # joined halfway and streamed to its end, then the title.
    item.locator(".conversation-link").click()
    expect(other.page).to_have_url(re.compile(f"/c/{conversation}/$"))
    expect(other.body(other.user_messages.first)).to_have_text("Sync me please #tokens=200 #delay=0.02")
    expect(other.replies.first).to_have_attribute("data-status", "generating")
    expect(other.replies.first).to_have_attribute("data-status", "complete")
    expect(other.body(other.replies.first)).to_have_text(numbered_words(200))
    expect(other.sidebar_item(conversation).locator(".conversation-title")).to_have_text("Sync me please chat")
    expect(other.page).to_have_title(re.compile(r"^Sync me please chat"))
    expect(chat.sidebar_item(conversation).locator(".conversation-title")).to_have_text("Sync me please chat")

    # With the conversation open in both, the next message and its streamed reply show in the other.
    expect(chat.replies.first).to_have_attribute("data-status", "complete")
    chat.send("And once more #tokens=150 #delay=0.02")
    expect(other.user_messages).to_have_count(2)
    expect(other.body(other.user_messages.last)).to_have_text("And once more #tokens=150 #delay=0.02")
    expect(other.replies).to_have_count(2)
    expect(other.replies.last).to_have_attribute("data-status", "generating")
    expect(other.body(other.replies.last)).to_contain_text("w10")
    expect(other.replies.last).to_have_attribute("data-status", "complete")
    expect(other.body(other.replies.last)).to_have_text(numbered_words(150))
    expect(other.messages).to_have_count(4)
    expect(chat.messages).to_have_count(4)
