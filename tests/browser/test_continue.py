"""Issue 15: a reply cut by the length limit is shown as cut, and Continue writes on in
the same message (the live server keeps the default limit, CHAT_MAX_REPLY_TOKENS=512)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import numbered_words, word_numbers
from tests.browser.test_replies import RECORD_STREAMED_TEXTS

LIMIT = 512


@pytest.mark.browser
def test_continue_on_a_cut_reply_grows_the_same_message_until_it_is_complete(chat):
    chat.page.context.add_init_script(RECORD_STREAMED_TEXTS)
    chat.reload()
    chat.send("Count far #tokens=600 #delay=0.004")
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "cut")
    expect(reply.get_by_test_id("message-status")).to_have_text("Cut off at the length limit")
    expect(chat.body(reply)).to_have_text(numbered_words(LIMIT))
    expect(reply.get_by_test_id("regenerate")).to_be_visible()  # Continue sits next to Regenerate
    reply_id = reply.get_attribute("data-id")
    before = len(chat.page.evaluate("window.__streamed"))

    reply.get_by_test_id("continue").click()
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "complete")
    expect(chat.replies).to_have_count(1)
    assert reply.get_attribute("data-id") == reply_id  # the same message, not a new version
    expect(chat.body(reply)).to_have_text(numbered_words(600))
    expect(reply.get_by_test_id("continue")).to_have_count(0)
    expect(reply.get_by_test_id("message-status")).to_have_count(0)

    # While it was continued, the message always showed the old text and then more of it.
    continued = chat.page.evaluate("window.__streamed")[before:]
    assert continued, "the continued reply was never shown being written"
    for text in continued:
        numbers = word_numbers(text)
        assert numbers == list(range(len(numbers))) and len(numbers) >= LIMIT, text[-200:]

    chat.reload()
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "complete")
    expect(chat.body(reply)).to_have_text(numbered_words(600))
