"""The sidebar's pin, archive and copy link ("…" menu), search highlights and results that
open at the message found; in every window of the user, by mouse and by keyboard."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import scripted_reply


def title_of(item):
    return item.locator(".conversation-title")


def group_of(item):
    return item.locator(":scope > .conversation-group")


@pytest.mark.browser
def test_pin_and_archive_from_the_menu_keep_every_window_in_step(chat, new_context):
    older = chat.start_chat("Pin this older chat")
    chat.by("new-chat").click()
    newer = chat.start_chat("Archive this newer chat")
    other = chat.second_window(new_context).goto(f"/c/{older}/")
    expect(chat.sidebar_items.first).to_have_attribute("data-id", newer)

    # By keyboard: Enter on the "…" button opens the menu on Rename; Down reaches Pin; Enter pins.
    chat.sidebar_item(older).get_by_test_id("conversation-menu").focus()
    chat.page.keyboard.press("Enter")
    expect(chat.sidebar_item(older).get_by_test_id("rename")).to_be_focused()
    chat.page.keyboard.press("ArrowDown")
    expect(chat.sidebar_item(older).get_by_test_id("pin")).to_be_focused()
    chat.page.keyboard.press("Enter")
    for window in (chat, other):
        expect(window.sidebar_items.first).to_have_attribute("data-id", older)
        expect(group_of(window.sidebar_item(older))).to_have_text("Pinned")
        expect(group_of(window.sidebar_item(newer))).to_have_text("Today")
    chat.reload()
    expect(chat.sidebar_items.first).to_have_attribute("data-id", older)
    expect(group_of(chat.sidebar_item(older))).to_have_text("Pinned")
    # Its menu now offers Unpin.
    chat.sidebar_item(older).get_by_test_id("conversation-menu").click()
    expect(chat.sidebar_item(older).get_by_test_id("unpin")).to_be_visible()
    chat.page.keyboard.press("Escape")

    # Archive (mouse): out of the list, into the collapsed Archived section, in both windows.
    chat.sidebar_item(newer).get_by_test_id("conversation-menu").click()
    chat.sidebar_item(newer).get_by_test_id("archive").click()
    expect(chat.sidebar_item(older).locator(".conversation-link")).to_be_focused()  # the focus stays in the list
    for window in (chat, other):
        expect(window.sidebar_item(newer)).to_have_count(0)
        expect(window.by("archived")).to_be_visible()
        expect(window.by("archived-toggle")).to_contain_text("Archived (1)")
        expect(window.by("archived-item")).to_be_hidden()  # collapsed
    chat.reload()
    expect(chat.sidebar_item(newer)).to_have_count(0)
    expect(chat.by("archived-toggle")).to_contain_text("Archived (1)")

    # By keyboard: Enter opens the section; Tab reaches its list (one stop), Right the Unarchive button.
    chat.by("archived-toggle").focus()
    chat.page.keyboard.press("Enter")
    item = chat.by("archived-item")
    expect(item).to_be_visible()
    expect(item).to_contain_text("Archive this newer chat")
    chat.page.keyboard.press("Tab")
    expect(item.locator(".archived-link")).to_be_focused()
    chat.page.keyboard.press("ArrowRight")
    expect(item.get_by_test_id("unarchive")).to_be_focused()
    chat.page.keyboard.press("Enter")
    for window in (chat, other):
        expect(window.sidebar_item(newer)).to_be_visible()
        expect(window.by("archived")).to_be_hidden()
        expect(window.sidebar_items).to_have_count(2)
    expect(chat.sidebar_items.first).to_have_attribute("data-id", older)  # still pinned on top


@pytest.mark.browser
def test_an_archived_conversation_opens_from_its_section(chat):
    archived = chat.start_chat("Put away for later")
    chat.by("new-chat").click()
    chat.start_chat("Still around")
    chat.sidebar_item(archived).get_by_test_id("conversation-menu").click()
    chat.sidebar_item(archived).get_by_test_id("archive").click()
    expect(chat.sidebar_item(archived)).to_have_count(0)
    chat.by("archived-toggle").click()
    chat.by("archived-item").locator(".archived-link").click()
    expect(chat.page).to_have_url(re.compile(f"/c/{archived}/$"))
    expect(chat.user_messages.first).to_contain_text("Put away for later")


@pytest.mark.browser
def test_copy_link_from_the_menu_gives_the_same_link_again(chat):
    chat.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    conversation = chat.start_chat("Share and copy me")
    item = chat.sidebar_item(conversation)
    item.get_by_test_id("conversation-menu").click()
    expect(item.get_by_test_id("copy-link")).to_have_count(0)  # not shared: nothing to copy
    chat.page.keyboard.press("Escape")

    chat.by("settings-toggle").click()
    chat.by("share").click()
    share_link = chat.by("share-link")
    expect(share_link).not_to_have_value("")
    url = share_link.input_value()
    chat.by("settings-toggle").click()

    chat.reload()  # the link is no longer shown anywhere on the page
    item = chat.sidebar_item(conversation)
    item.get_by_test_id("conversation-menu").click()
    item.get_by_test_id("copy-link").click()
    expect(chat.page.locator(".app-alert")).to_contain_text("Link copied.")
    expect(chat.page.locator(".app-alert")).to_contain_text(url)
    chat.page.wait_for_function("(url) => navigator.clipboard.readText().then((text) => text === url)", arg=url)

    shared = chat.page.context.new_page()
    shared.goto(url)
    expect(shared.get_by_test_id("shared-model")).to_have_text("Model: echo")
    expect(shared.get_by_test_id("start-own-chat")).to_have_attribute("href", "/")


@pytest.mark.browser
def test_search_marks_the_words_and_opens_the_conversation_at_the_message(chat):
    long_reply = "\n\n".join(f"Line {i}." for i in range(40))  # tall, and under the length limit
    target = chat.start_chat("Tell me about tigers " + scripted_reply("Tigers are large striped cats."))
    chat.send_and_wait("And pandas? " + scripted_reply(long_reply))
    chat.send_and_wait("And more " + scripted_reply(long_reply))
    chat.by("new-chat").click()
    chat.start_chat("Something else entirely")

    # Typing, then a short pause: the messages are searched without Enter.
    search = chat.by("search")
    search.press_sequentially("striped")
    hit = chat.by("search-result")
    expect(hit).to_have_count(1)
    marks = hit.locator("mark")
    expect(marks).to_have_text(["striped"])
    # The snippet is text: markup in it would be shown, not run (built from text nodes).
    assert hit.locator(".search-result-snippet").inner_html().count("<mark>") == 1

    # Choosing it opens the conversation scrolled to that message, marked for a moment.
    hit.focus()
    chat.page.keyboard.press("Enter")
    expect(chat.page).to_have_url(re.compile(f"/c/{target}/$"))
    found = chat.replies.first
    expect(found).to_have_attribute("data-found", "true")
    expect(found).to_be_focused()
    expect(found).to_be_in_viewport()
    expect(chat.replies.last).not_to_be_in_viewport()
    expect(found).not_to_have_attribute("data-found", "true", timeout=5000)


@pytest.mark.browser
def test_a_result_on_another_branch_switches_to_it(chat):
    conversation = chat.start_chat("Name a colour " + scripted_reply("Vermilion is my pick."))
    chat.user_messages.first.get_by_test_id("edit").click()
    chat.by("edit-input").fill("Name a shape " + scripted_reply("A hexagon."))
    chat.by("edit-save").click()
    expect(chat.body(chat.replies.last)).to_have_text("A hexagon.")
    expect(chat.replies.last).to_have_attribute("data-status", "complete")
    expect(chat.page.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    chat.by("new-chat").click()
    chat.start_chat("Another chat")

    chat.by("search").fill("vermilion")
    chat.by("search").press("Enter")
    hit = chat.by("search-result")
    expect(hit).to_have_count(1)
    hit.click()
    expect(chat.page).to_have_url(re.compile(f"/c/{conversation}/$"))
    expect(chat.page.get_by_test_id("branch-counter")).to_have_text("1 / 2")
    expect(chat.replies.first).to_have_attribute("data-found", "true")
    expect(chat.body(chat.replies.first)).to_have_text("Vermilion is my pick.")


@pytest.mark.browser
def test_a_conversation_whose_first_reply_failed_still_gets_a_title(chat):
    # The model failed midway: it is asked for a title all the same (the scripted one answers).
    chat.send("Plan a trip to Lisbon #tokens=10 #fail=2")
    failed = chat.wait_for_conversation_url()
    expect(chat.replies.last).to_have_attribute("data-status", "failed")
    expect(title_of(chat.sidebar_item(failed))).to_have_text("Plan a trip chat")

    # The model refused (401): no title call; the title is the message's first words.
    chat.by("new-chat").click()
    chat.send("Budget for the new kitchen #status=401")
    expect(chat.page).not_to_have_url(re.compile(f"/c/{failed}/$"))
    refused = chat.wait_for_conversation_url()
    expect(chat.replies.last).to_have_attribute("data-status", "failed")
    item = chat.sidebar_item(refused)
    expect(title_of(item)).to_have_text(re.compile(r"^Budget for the new kitchen"))
    expect(item).not_to_have_class(re.compile(r"\bis-untitled\b"))
    chat.reload()
    expect(title_of(chat.sidebar_item(refused))).to_have_text(re.compile(r"^Budget for the new kitchen"))
