"""The sidebar: date groups, the "…" menu (rename, delete with Undo), search, in every window of the user."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import scripted_reply


def title_of(item):
    return item.locator(".conversation-title")


@pytest.mark.browser
def test_rename_and_delete_from_the_sidebar_update_every_window(chat, new_context):
    kept = chat.start_chat("Keep this one")
    chat.by("new-chat").click()
    expect(chat.page).to_have_url(re.compile(r"/new/$"))
    doomed = chat.start_chat("Rename me later")
    other = chat.second_window(new_context).goto(f"/c/{doomed}/")
    expect(other.sidebar_items).to_have_count(2)

    # Rename, from the conversation's "…" menu: inline, Enter saves; the other window follows, and it is stored.
    item = chat.sidebar_item(doomed)
    expect(title_of(item)).to_have_text("Rename me later chat")
    item.get_by_test_id("conversation-menu").click()
    item.get_by_test_id("rename").click()
    field = item.get_by_test_id("rename-input")
    expect(field).to_be_focused()
    expect(field).to_have_value("Rename me later chat")
    field.fill("Holiday plans")
    field.press("Enter")
    expect(title_of(item)).to_have_text("Holiday plans")
    expect(item.get_by_test_id("rename-input")).to_have_count(0)
    expect(title_of(other.sidebar_item(doomed))).to_have_text("Holiday plans")
    expect(other.page).to_have_title(re.compile(r"^Holiday plans"))
    chat.reload()
    expect(title_of(chat.sidebar_item(doomed))).to_have_text("Holiday plans")

    # Delete (from the "…" menu): the conversation leaves the list at once, with Undo for a
    # few seconds; Undo brings it back and nothing was deleted.
    item = chat.sidebar_item(doomed)
    item.get_by_test_id("conversation-menu").click()
    item.get_by_test_id("delete").click()
    undo_bar = chat.by("undo-bar")
    expect(undo_bar).to_be_visible()
    expect(undo_bar).to_contain_text("Holiday plans")
    expect(item).to_be_hidden()
    chat.by("undo").click()
    expect(undo_bar).to_be_hidden()
    expect(item).to_be_visible()
    chat.reload()
    expect(chat.sidebar_items).to_have_count(2)

    # By keyboard: Enter opens the menu on its first item, arrows move (Up from the first wraps
    # to the last, Delete), Enter deletes; once the Undo bar has gone, the conversation is deleted for good.
    chat.sidebar_item(doomed).get_by_test_id("conversation-menu").focus()
    chat.page.keyboard.press("Enter")
    expect(chat.sidebar_item(doomed).get_by_test_id("rename")).to_be_focused()
    chat.page.keyboard.press("ArrowUp")
    expect(chat.sidebar_item(doomed).get_by_test_id("delete")).to_be_focused()
    chat.page.keyboard.press("Enter")
    expect(undo_bar).to_be_visible()
    expect(chat.sidebar_items.filter(visible=True)).to_have_count(1)
    expect(undo_bar).to_be_hidden()
    expect(chat.sidebar_item(doomed)).to_have_count(0)
    expect(chat.sidebar_items).to_have_count(1)
    expect(chat.sidebar_item(kept)).to_be_visible()
    expect(chat.page).to_have_url(re.compile(r"/new/$"))  # it was the open one here

    # The other window had it open: it is gone from its sidebar and its pane, with a word why.
    expect(other.sidebar_item(doomed)).to_have_count(0)
    expect(other.sidebar_items).to_have_count(1)
    expect(other.page).to_have_url(re.compile(r"/new/$"))
    expect(other.messages).to_have_count(0)
    expect(other.by("error")).to_contain_text("deleted in another tab")
    # In place: a banner right above the message box, not over the conversation.
    banner = other.by("error").bounding_box()
    composer_box = other.by("composer-form").bounding_box()
    assert abs(banner["y"] + banner["height"] - composer_box["y"]) < 2, (banner, composer_box)

    chat.reload()
    expect(chat.sidebar_items).to_have_count(1)
    assert chat.page.goto(f"/c/{doomed}/").status == 404


@pytest.mark.browser
def test_search_filters_titles_as_you_type_and_enter_searches_the_messages(chat):
    garden = chat.start_chat("Planning a garden party")
    chat.by("new-chat").click()
    physics = chat.start_chat("Quantum physics basics " + scripted_reply("Think of a zebra crossing a quantum field."))
    chat.by("new-chat").click()
    chat.start_chat("Weekend cooking ideas")
    expect(title_of(chat.sidebar_item(physics))).to_have_text("Quantum physics basics chat")
    expect(title_of(chat.sidebar_item(garden))).to_have_text("Planning a garden chat")

    # Typing filters the titles shown, letter by letter.
    search = chat.by("search")
    search.press_sequentially("gard")
    expect(chat.sidebar_item(garden)).to_be_visible()
    expect(chat.sidebar_item(physics)).to_be_hidden()
    expect(chat.page.locator('[data-testid="conversation-item"]:visible')).to_have_count(1)
    search.fill("")
    expect(chat.page.locator('[data-testid="conversation-item"]:visible')).to_have_count(3)

    # A word that is in no title, only in a reply: Enter searches the messages.
    search.press_sequentially("zebra")
    expect(chat.page.locator('[data-testid="conversation-item"]:visible')).to_have_count(0)
    expect(chat.page.locator("#conversation-no-match")).to_be_visible()
    search.press("Enter")
    results = chat.by("search-results")
    expect(results).to_be_visible()
    hits = chat.by("search-result")
    expect(hits).to_have_count(1)
    expect(hits.first).to_contain_text("Quantum physics basics chat")
    expect(hits.first).to_contain_text("zebra")

    hits.first.click()
    expect(chat.page).to_have_url(re.compile(f"/c/{physics}/$"))
    expect(chat.body(chat.replies.first)).to_have_text("Think of a zebra crossing a quantum field.")
    expect(chat.sidebar_item(physics)).to_have_class(re.compile(r"\bactive\b"))


RECORD_TITLE_FADES = """
window.__fades = [];
document.addEventListener("animationstart", (event) => {
  if (event.animationName === "chat-title-fade") window.__fades.push(event.target.textContent);
}, true);
"""
NO_RUNNING_ANIMATION = "(node) => node.getAnimations().length === 0"


@pytest.mark.browser
def test_a_title_fades_in_once_and_not_again_when_its_conversation_moves(chat):
    chat.page.context.add_init_script(RECORD_TITLE_FADES)
    chat.reload()

    def titled(conversation, text):
        title = title_of(chat.sidebar_item(conversation))
        expect(title).to_have_text(text)
        chat.page.wait_for_function(NO_RUNNING_ANIMATION, arg=title.element_handle())
        assert text in chat.page.evaluate("window.__fades")  # the new title faded in
        chat.page.evaluate("window.__fades = []")

    first = chat.start_chat("First topic here")
    titled(first, "First topic here chat")
    chat.send_and_wait("More on it")  # the only conversation: updated in place
    chat.by("new-chat").click()
    second = chat.start_chat("Second topic here")
    titled(second, "Second topic here chat")
    assert chat.page.evaluate("window.__fades") == []

    chat.sidebar_item(first).locator(".conversation-link").click()
    expect(chat.messages).to_have_count(4)
    chat.send_and_wait("Back to the first")  # moves to the top of the list
    expect(chat.sidebar_items.first).to_have_attribute("data-id", first)
    expect(chat.sidebar_items.nth(1)).to_have_attribute("data-id", second)
    assert chat.page.evaluate("window.__fades") == []


@pytest.mark.browser
def test_conversations_are_grouped_under_date_headings(chat):
    chat.start_chat("First of today")
    chat.by("new-chat").click()
    chat.start_chat("Second of today")
    groups = chat.page.locator(".conversation-group")
    expect(groups).to_have_text(["Today"])  # one heading over both

    # The same conversations seen from later days (the page's clock moved on).
    for days, heading in ((1, "Yesterday"), (3, "Previous 7 days"), (12, "Older")):
        chat.page.clock.set_fixed_time(datetime.now() + timedelta(days=days))
        chat.reload()
        expect(groups).to_have_text([heading])
        expect(chat.sidebar_items.first.locator(".conversation-group")).to_have_text(heading)


@pytest.mark.browser
def test_the_composer_is_a_few_tab_stops_away_and_arrows_move_inside_the_lists(chat):
    first = chat.start_chat("One conversation")
    chat.by("new-chat").click()
    second = chat.start_chat("Another conversation")
    chat.send_and_wait("And a second question")
    page = chat.page
    chat.reload()

    # From the top of the page: one stop per list (conversations, the messages' buttons).
    page.evaluate("document.activeElement && document.activeElement.blur()")
    stops = []
    while len(stops) < 40:
        page.keyboard.press("Tab")
        if chat.composer.evaluate("(node) => node === document.activeElement"):
            break
        if page.evaluate("document.activeElement !== document.body"):
            stops.append(page.evaluate("document.activeElement.dataset.testid || document.activeElement.className"))
    assert len(stops) + 1 <= 11, " / ".join(stops)  # 33 with two chats before
    assert stops.count("conversation-link") == 1 and "conversation-menu" not in stops, stops

    # Arrows inside the conversations: Down to the next one, Right to its "…", Left back; Enter opens.
    open_link = chat.sidebar_item(second).locator(".conversation-link")
    open_link.focus()
    page.keyboard.press("ArrowDown")
    other_link = chat.sidebar_item(first).locator(".conversation-link")
    expect(other_link).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(chat.sidebar_item(first).get_by_test_id("conversation-menu")).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(other_link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/c/{first}/$"))
    expect(chat.messages).to_have_count(2)

    # In the messages' buttons, arrows go from one to the next.
    buttons = page.locator('.message-footer button:not([disabled])')
    buttons.first.focus()
    page.keyboard.press("ArrowRight")
    expect(buttons.nth(1)).to_be_focused()
    assert page.locator('.message-footer button[tabindex="0"]').count() == 1
