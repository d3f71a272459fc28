"""Keyboard shortcuts: new chat, focus the message box, copy the last reply, and their help dialog."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import scripted_reply


@pytest.mark.browser
def test_shortcuts_start_a_chat_focus_the_composer_copy_the_last_reply_and_are_listed_under_question_mark(chat):
    page = chat.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    chat.start_chat("Say something " + scripted_reply("The **last** reply."))

    # Ctrl+Shift+C copies the last reply, as written (Markdown).
    page.keyboard.press("Control+Shift+C")
    page.wait_for_function("navigator.clipboard.readText().then((text) => text === 'The **last** reply.')")

    # `/` (outside a field) and Shift+Escape (anywhere) put the focus in the message box.
    chat.by("search").focus()
    page.keyboard.press("Shift+Escape")
    expect(chat.composer).to_be_focused()
    page.locator("body").focus()
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("/")
    expect(chat.composer).to_be_focused()
    expect(chat.composer).to_have_value("")

    # `?` outside a field opens the list of shortcuts; in the message box it is just a character.
    chat.composer.press("?")
    expect(chat.composer).to_have_value("?")
    expect(chat.by("shortcuts-dialog")).to_be_hidden()
    chat.composer.fill("")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?")
    dialog = chat.by("shortcuts-dialog")
    expect(dialog).to_be_visible()
    for name in ("New chat", "Focus the message box", "Copy the last reply", "Stop the reply being written"):
        expect(dialog).to_contain_text(name)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # It is also in the account menu, for mouse users.
    chat.by("user-menu").click()
    chat.by("show-shortcuts").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # Ctrl+Shift+O starts a new chat, ready to type in.
    chat.composer.focus()
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"/new/$"))
    expect(chat.messages).to_have_count(0)
    expect(chat.composer).to_be_focused()
