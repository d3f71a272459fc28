"""Controlling replies: stop, regenerate, edit and switch versions, resume after a reload."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import numbered_words, word_numbers

STAMPED_REPLY = re.compile(r"^w0@\d{9} w1@\d{9} w2@\d{9}$")

# Records every text the reply being written shows, from the first paint of each page load on.
RECORD_STREAMED_TEXTS = """
window.__streamed = [];
document.addEventListener("DOMContentLoaded", () => {
  const record = () => {
    const reply = document.querySelector('[data-testid="message"][data-role="assistant"][data-status="generating"]');
    if (!reply) return;
    const text = reply.querySelector('[data-testid="message-body"]').textContent;
    if (window.__streamed[window.__streamed.length - 1] !== text) window.__streamed.push(text);
  };
  new MutationObserver(record).observe(document.body, { childList: true, subtree: true, characterData: true, attributes: true });
  record();
});
"""


@pytest.mark.browser
def test_stop_mid_reply_keeps_the_partial_text_also_after_a_reload(chat):
    chat.send("Long answer please #tokens=400 #delay=0.02")
    reply = chat.replies.first
    expect(chat.body(reply)).to_contain_text("w10")
    expect(reply).to_have_attribute("data-status", "generating")

    chat.by("stop").click()
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.get_by_test_id("message-status")).to_have_text("Stopped")
    partial = chat.body(reply).inner_text()
    numbers = word_numbers(partial)
    assert numbers == list(range(len(numbers))), partial
    assert 10 < len(numbers) < 400, partial
    expect(chat.by("composer-form")).to_have_attribute("data-state", "ready")  # no longer blocked by the reply

    chat.reload()
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.get_by_test_id("message-status")).to_have_text("Stopped")
    expect(chat.body(reply)).to_have_text(partial)


# Elements of a reply that show the "still writing" dot (a ::after that pulses).
WRITING_DOTS = """(reply) => [reply, ...reply.querySelectorAll("*")].filter(
  (el) => getComputedStyle(el, "::after").animationName === "chat-pulse").length"""


@pytest.mark.browser
def test_stop_takes_the_send_buttons_place_and_escape_stops_the_reply(chat):
    page = chat.page
    send_box = chat.send_button.bounding_box()
    chat.composer.fill("Long answer please #tokens=400 #delay=0.02")
    chat.composer.press("Enter")
    reply = chat.replies.first
    expect(chat.body(reply)).to_contain_text("w10")

    # Stop sits exactly where Send was; the reply has no button and no "Writing…" row,
    # only a dot after its last word.
    stop = chat.by("stop")
    expect(stop).to_be_visible()
    expect(chat.send_button).to_be_hidden()
    stop_box = stop.bounding_box()
    assert all(abs(stop_box[k] - send_box[k]) < 1 for k in ("x", "y", "width", "height")), (send_box, stop_box)
    expect(reply.get_by_role("button")).to_have_count(0)
    expect(reply).not_to_contain_text("Writing")
    assert page.evaluate(WRITING_DOTS, reply.element_handle()) == 1

    # Escape closes an open menu first, without stopping the reply.
    chat.by("settings-toggle").click()
    expect(chat.by("settings-panel")).to_be_visible()
    page.keyboard.press("Escape")
    expect(chat.by("settings-panel")).to_be_hidden()
    expect(chat.by("settings-toggle")).to_be_focused()
    expect(reply).to_have_attribute("data-status", "generating")

    # In the composer, Escape stops it; Send comes back and the dot goes.
    chat.composer.focus()
    page.keyboard.press("Escape")
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(stop).to_be_hidden()
    expect(chat.send_button).to_be_visible()
    assert page.evaluate(WRITING_DOTS, reply.element_handle()) == 0
    assert 10 < len(word_numbers(chat.body(reply).inner_text())) < 400


@pytest.mark.browser
def test_regenerate_adds_a_second_version_and_the_first_stays_one_click_away(chat):
    # #stamp makes every reply different: each word carries the time it was sent.
    first = chat.send_and_wait("Tell me something #tokens=3 #stamp")
    first_text = chat.body(first).inner_text()
    assert STAMPED_REPLY.match(first_text), first_text

    first.get_by_test_id("regenerate").click()
    reply = chat.replies.last
    expect(reply.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(reply).to_have_attribute("data-status", "complete")
    second_text = chat.body(reply).inner_text()
    assert STAMPED_REPLY.match(second_text) and second_text != first_text
    expect(chat.replies).to_have_count(1)

    chat.replies.last.get_by_test_id("branch-prev").click()
    expect(chat.replies.last.get_by_test_id("branch-counter")).to_have_text("1 / 2")
    expect(chat.body(chat.replies.last)).to_have_text(first_text)
    expect(chat.replies.last.get_by_test_id("branch-prev")).to_be_disabled()

    chat.replies.last.get_by_test_id("branch-next").click()
    expect(chat.replies.last.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(chat.body(chat.replies.last)).to_have_text(second_text)


@pytest.mark.browser
def test_editing_a_message_makes_a_new_branch_and_the_arrows_switch_between_them(chat):
    chat.send_and_wait("What colour is the sky?")
    expect(chat.body(chat.replies.last)).to_have_text("Echo: What colour is the sky?")

    chat.user_messages.first.get_by_test_id("edit").click()
    editor = chat.by("edit-input")
    expect(editor).to_have_value("What colour is the sky?")
    editor.fill("What colour is the sea?")
    chat.by("edit-save").click()

    question, answer = chat.user_messages.first, chat.replies.first
    expect(chat.body(question)).to_have_text("What colour is the sea?")
    expect(question.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(answer).to_have_attribute("data-status", "complete")
    expect(chat.body(answer)).to_have_text("Echo: What colour is the sea?")
    expect(chat.messages).to_have_count(2)

    question.get_by_test_id("branch-prev").click()
    expect(question.get_by_test_id("branch-counter")).to_have_text("1 / 2")
    expect(chat.body(question)).to_have_text("What colour is the sky?")
    expect(chat.body(chat.replies.first)).to_have_text("Echo: What colour is the sky?")

    chat.user_messages.first.get_by_test_id("branch-next").click()
    expect(chat.user_messages.first.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(chat.body(chat.user_messages.first)).to_have_text("What colour is the sea?")
    expect(chat.body(chat.replies.first)).to_have_text("Echo: What colour is the sea?")

    # The shown branch is the stored one: a reload shows the same.
    chat.reload()
    expect(chat.body(chat.user_messages.first)).to_have_text("What colour is the sea?")
    expect(chat.user_messages.first.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(chat.body(chat.replies.first)).to_have_text("Echo: What colour is the sea?")


@pytest.mark.browser
def test_a_reload_mid_reply_continues_the_reply_without_gap_or_duplicate(chat):
    chat.page.context.add_init_script(RECORD_STREAMED_TEXTS)
    chat.send("Count for me #tokens=300 #delay=0.02")
    expect(chat.body(chat.replies.first)).to_contain_text("w30")
    expect(chat.replies.first).to_have_attribute("data-status", "generating")

    chat.reload()
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "generating")  # joined halfway, still being written
    expect(reply).to_have_attribute("data-status", "complete")
    expect(chat.body(reply)).to_have_text(numbered_words(300))

    # Every text shown while it streamed after the reload was the reply so far: w0 up to some wN.
    streamed = chat.page.evaluate("window.__streamed")
    assert len(streamed) > 5, streamed
    for text in streamed:
        numbers = word_numbers(text)
        assert numbers == list(range(len(numbers))), text
    assert word_numbers(streamed[0])[-1] >= 30  # the first paint already had the text so far


OFFSET_IN_PANE = """(node) => node.getBoundingClientRect().top
  - document.getElementById("message-scroller").getBoundingClientRect().top"""


@pytest.mark.browser
def test_switching_versions_of_an_earlier_message_keeps_it_where_it_was_on_screen(chat):
    long = " #tokens=400 #markdown=mixed"
    chat.send_and_wait("First question" + long)
    chat.send_and_wait("Second question" + long)
    question = chat.user_messages.nth(1)
    question.hover()
    question.get_by_test_id("edit").click()
    chat.by("edit-input").fill("Second question, asked again" + long)
    chat.by("edit-save").click()
    expect(question.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(chat.replies.last).to_have_attribute("data-status", "complete")
    chat.send_and_wait("And more" + long)
    expect(chat.sidebar_items.first.locator(".conversation-title")).to_have_text("First question chat")  # no frame still due

    # Reading from above: the question 120 px below the top of the pane, far from the bottom.
    chat.page.evaluate("""(node) => { const scroller = document.getElementById("message-scroller");
      scroller.scrollTop += node.getBoundingClientRect().top - scroller.getBoundingClientRect().top - 120; }""",
                       question.element_handle())
    expect(chat.by("jump-bottom")).to_be_visible()  # the pane stopped following the bottom
    before = question.evaluate(OFFSET_IN_PANE)
    assert abs(before - 120) < 2, before

    previous = question.get_by_test_id("branch-prev")
    expect(previous).to_be_enabled()
    previous.focus()  # by keyboard (the arrows of the messages' buttons reach it too)
    chat.page.keyboard.press("Enter")
    expect(question.get_by_test_id("branch-counter")).to_have_text("1 / 2")
    expect(chat.body(question)).to_have_text("Second question" + long)
    after = question.evaluate(OFFSET_IN_PANE)
    assert abs(after - before) < 2, (before, after)
