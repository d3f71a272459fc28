"""The account on the settings page, in Chromium: password, custom instructions and default
model, export of every conversation, deleting the account, and today's usage.

These tests use a server of their own that offers two hosted models (the scripted model
answers under any name), so that a default model other than the site's can be picked.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, ChatPage, start_live_server
from tests.browser.test_accessibility import violations

NEW_PASSWORD = "Another-browser-passw0rd"
OTHER_MODEL = "test/other"


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake_model):
    live = start_live_server(tmp_path_factory.mktemp("account-live"), fake_model.url,
                             HF_MODELS=f"test/echo,{OTHER_MODEL}", HF_DAILY_REQUESTS_PER_USER="100")
    yield live
    live.stop()


@pytest.fixture
def account(new_context, server) -> ChatPage:
    """A signed-up user of this module's server, on an empty chat page."""
    return ChatPage(new_context(server=server).new_page()).signup()


def transcripts_of(server, conversation_id: str) -> list[Path]:
    """The stored transcript of that conversation, wherever (under whichever user) it is."""
    return list((Path(server.env["CHAT_DATA_DIR"]) / "conversations").glob(f"*/{conversation_id}.json"))


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_test_id("login-submit").click()


@pytest.mark.browser
def test_password_is_changed_from_the_settings_page_by_keyboard(account):
    page = account.page
    page.goto("/settings/")
    page.get_by_label("Old password").focus()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    expect(page.get_by_label("New password", exact=True)).to_be_focused()
    page.keyboard.type(NEW_PASSWORD)
    page.keyboard.press("Tab")
    expect(page.get_by_label("New password confirmation")).to_be_focused()
    page.keyboard.type(NEW_PASSWORD)
    page.keyboard.press("Enter")

    expect(page.get_by_test_id("password-changed")).to_contain_text("Your password was changed")
    expect(page).to_have_url(re.compile(r"/settings/#password-heading$"))
    account.goto("/new/")  # still logged in: the chat page and its socket open

    page.get_by_test_id("user-menu").click()
    page.locator("#user-menu").get_by_test_id("logout").click()
    log_in(page, account.username, PASSWORD)
    expect(page.get_by_test_id("error")).to_be_visible()  # the old password no longer works
    log_in(page, account.username, NEW_PASSWORD)
    page.wait_for_url("**/new/")


@pytest.mark.browser
def test_a_wrong_old_password_is_said_next_to_its_field(account):
    page = account.page
    page.goto("/settings/")
    page.get_by_label("Old password").fill("not it")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    page.get_by_test_id("change-password").click()
    old = page.get_by_label("Old password")
    expect(old).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("password")).to_contain_text("Your old password was entered incorrectly")


@pytest.mark.browser
def test_new_chats_start_from_the_custom_instructions_and_default_model(account, server):
    page = account.page
    page.goto("/settings/")
    instructions = page.get_by_label("Custom instructions")
    instructions.focus()
    page.keyboard.type("Answer like a pirate.")
    page.get_by_label("Default model").select_option(label="other")
    page.get_by_test_id("save-preferences").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("preferences-saved")).to_contain_text("Saved.")
    expect(page.get_by_label("Custom instructions")).to_have_value("Answer like a pirate.")
    expect(page.get_by_label("Default model")).to_have_value(OTHER_MODEL)

    account.goto("/new/")
    expect(account.by("model-picker")).to_have_value(OTHER_MODEL)
    reply = account.send_and_wait("Where is the treasure?")
    expect(reply.locator(".message-model")).to_have_text("other")
    account.wait_for_conversation_url()
    account.by("settings-toggle").click()
    expect(account.by("system-prompt")).to_have_value("Answer like a pirate.")

    # This conversation moves to the other model; a new chat still starts on the default.
    account.by("model-picker").select_option("test/echo")
    account.by("new-chat").click()
    expect(account.by("model-picker")).to_have_value(OTHER_MODEL)


@pytest.mark.browser
def test_every_conversation_is_exported_in_one_zip(account):
    first = account.start_chat("Plan a picnic")
    account.by("new-chat").click()
    second = account.start_chat("Fix my bike")
    page = account.page
    page.goto("/settings/")
    export = page.get_by_test_id("export-all")
    expect(export).to_contain_text("Download all (2 conversations)")
    export.focus()
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert re.fullmatch(r"chat-export-\d{4}-\d\d-\d\d\.zip", download.value.suggested_filename)
    archive = zipfile.ZipFile(download.value.path())
    names = sorted(archive.namelist())
    assert len(names) == 4 and {Path(name).suffix for name in names} == {".md", ".json"}, names
    for conversation_id, words in ((first, "Plan a picnic"), (second, "Fix my bike")):
        [markdown] = [n for n in names if n.endswith(f"-{conversation_id[:8]}.md")]
        assert words in archive.read(markdown).decode()
        tree = json.loads(archive.read(markdown[:-3] + ".json"))
        assert tree["id"] == conversation_id and len(tree["messages"]) == 2


@pytest.mark.browser
def test_deleting_the_account_needs_the_password_and_removes_its_transcripts(account, new_context, server):
    bystander = ChatPage(new_context(server=server).new_page()).signup()
    kept = bystander.start_chat("Someone else's chat")
    doomed = account.start_chat("Delete me with my account")
    other_window = account.second_window(new_context, server=server).goto(f"/c/{doomed}/")
    assert transcripts_of(server, doomed)

    page = account.page
    page.goto("/settings/")
    form = page.get_by_test_id("delete-account")
    form.get_by_label("Your password").fill("wrong password")
    confirm = form.get_by_label(re.compile("I understand"))
    confirm.focus()
    page.keyboard.press("Space")
    expect(confirm).to_be_checked()
    form.get_by_test_id("delete-account-submit").click()
    expect(page.get_by_test_id("delete-account")).to_contain_text("That is not your password. Nothing was deleted.")
    assert transcripts_of(server, doomed), "a wrong password deleted something"
    other_window.expect_connected()

    form = page.get_by_test_id("delete-account")
    form.get_by_label("Your password").fill(PASSWORD)
    form.get_by_label(re.compile("I understand")).check()
    form.get_by_test_id("delete-account-submit").click()
    expect(page.get_by_test_id("account-deleted")).to_contain_text("Your account is deleted")

    assert transcripts_of(server, doomed) == []
    assert transcripts_of(server, kept), "another user's transcript went too"
    expect(other_window.status).to_have_attribute("data-state", "offline")  # its socket was closed
    expect(other_window.status).to_contain_text("Signed out")
    page.goto("/settings/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    bystander.reload()
    expect(bystander.sidebar_item(kept)).to_be_visible()


@pytest.mark.browser
def test_todays_usage_is_a_calm_line_in_the_account_menu_and_on_the_settings_page(account):
    toggle = account.by("user-menu")
    toggle.focus()
    account.page.keyboard.press("Enter")
    line = account.by("usage-line")
    expect(line).to_have_text("Hosted models today: 0 of 100 requests used, 100 left. Resets at midnight UTC.")
    account.page.keyboard.press("Escape")
    account.start_chat("Count me")  # a hosted model: the reply counts, and so does its title
    account.reload()
    account.by("user-menu").click()
    expect(line).to_contain_text(re.compile(r"Hosted models today: [12] of 100 requests used"))
    account.page.goto("/settings/")
    expect(account.by("usage")).to_contain_text("of your 100 daily requests to hosted models")


@pytest.mark.browser
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_settings_page_stays_accessible_with_its_new_forms_and_their_errors(new_context, server, theme):
    chat = ChatPage(new_context(server=server, bypass_csp=True, color_scheme=theme).new_page()).signup()
    page = chat.page
    chat.by("user-menu").click()
    expect(chat.by("usage-line")).to_be_visible()
    found = violations(page, "account menu open")
    page.goto("/settings/")
    found += violations(page, "settings")
    page.get_by_test_id("delete-account-submit").click()  # no password, no confirmation
    expect(page.get_by_test_id("delete-account")).to_contain_text("Tick the box to confirm")
    found += violations(page, "settings, delete refused")
    page.get_by_label("Old password").fill("wrong")
    page.get_by_test_id("change-password").click()
    expect(page.get_by_test_id("password")).to_contain_text("incorrectly")
    found += violations(page, "settings, password refused")
    assert not found, "axe found violations:\n" + "\n".join(found)
