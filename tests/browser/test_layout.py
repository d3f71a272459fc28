"""The page on a phone, and the colour theme."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, ChatPage

NO_HORIZONTAL_SCROLL = "() => document.scrollingElement.scrollWidth <= window.innerWidth"
# A code listing wider than the screen scrolls inside its own box.
WIDE_CODE_SCROLLS_ITSELF = """() => [...document.querySelectorAll(".markdown-body pre")].every(
  (pre) => pre.scrollWidth <= pre.clientWidth || ["auto", "scroll"].includes(getComputedStyle(pre).overflowX))"""


def in_viewport(page, locator) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return bool(box) and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= size["width"] + 0.5 \
        and box["y"] + box["height"] <= size["height"] + 0.5


@pytest.mark.browser
def test_on_a_phone_the_sidebar_folds_away_and_chatting_works(new_context):
    chat = ChatPage(new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()).signup()
    page = chat.page
    sidebar = page.locator("#sidebar")
    toggle = chat.by("sidebar-toggle")

    # The sidebar is folded behind its toggle; the composer is on screen and usable.
    expect(sidebar).to_be_hidden()
    expect(sidebar).not_to_be_in_viewport()
    expect(chat.by("new-chat")).to_be_hidden()
    expect(toggle).to_be_visible()
    expect(chat.composer).to_be_visible()
    assert in_viewport(page, chat.composer) and in_viewport(page, chat.send_button)
    assert page.evaluate(NO_HORIZONTAL_SCROLL)

    # Sending works; a reply with a table and a long code listing does not widen the page.
    chat.composer.tap()
    reply = chat.send_and_wait("Hello from a phone #tokens=160 #markdown=mixed")
    expect(reply.locator("table")).not_to_have_count(0)
    expect(reply.locator("pre")).not_to_have_count(0)
    conversation = chat.wait_for_conversation_url()
    assert page.evaluate(NO_HORIZONTAL_SCROLL), page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert page.evaluate(WIDE_CODE_SCROLLS_ITSELF)
    assert in_viewport(page, chat.composer) and in_viewport(page, chat.send_button)

    # The settings panel fits on the screen.
    chat.by("settings-toggle").tap()
    panel = chat.by("settings-panel")
    expect(panel).to_be_visible()
    assert in_viewport(page, panel), panel.bounding_box()
    chat.by("settings-toggle").tap()
    expect(panel).to_be_hidden()

    # The toggle shows the conversations over the page; picking one folds them away again.
    toggle.tap()
    expect(sidebar).to_be_visible()
    expect(sidebar).to_be_in_viewport()
    item = chat.sidebar_item(conversation)
    expect(item).to_be_visible()
    expect(item.locator(".conversation-title")).to_have_text("Hello from a chat")
    chat.by("new-chat").tap()
    expect(sidebar).to_be_hidden()
    expect(page).to_have_url(re.compile(r"/new/$"))
    toggle.tap()
    item.locator(".conversation-link").tap()
    expect(sidebar).to_be_hidden()
    expect(page).to_have_url(re.compile(f"/c/{conversation}/$"))
    expect(chat.replies).to_have_count(1)
    assert page.evaluate(NO_HORIZONTAL_SCROLL)

    # New chat is in the phone's header too, without opening the conversations.
    chat.by("header-new-chat").tap()
    expect(page).to_have_url(re.compile(r"/new/$"))
    expect(chat.messages).to_have_count(0)
    expect(sidebar).to_be_hidden()


@pytest.mark.browser
def test_the_dark_theme_is_remembered_across_reloads(chat):
    page = chat.page
    html = page.locator("html")
    expect(html).to_have_attribute("data-bs-theme", "light")
    light_background = page.evaluate("getComputedStyle(document.body).backgroundColor")

    chat.by("theme-toggle").click()
    expect(html).to_have_attribute("data-bs-theme", "dark")
    expect(chat.by("theme-toggle")).to_have_attribute("aria-label", "Switch to light theme")
    dark_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark_background != light_background
    assert page.evaluate("localStorage.getItem('chat-theme')") == "dark"

    chat.reload()
    expect(html).to_have_attribute("data-bs-theme", "dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == dark_background

    chat.by("theme-toggle").click()
    expect(html).to_have_attribute("data-bs-theme", "light")
    chat.reload()
    expect(html).to_have_attribute("data-bs-theme", "light")


FIRST_LOAD_BUDGET = 250 * 1000  # bytes of CSS, JS and fonts, before compression (issue 17)


@pytest.mark.browser
def test_first_load_is_under_250_kb_of_css_js_and_fonts_all_from_this_server(chat, new_context):
    fresh = chat.second_window(new_context)  # a new context: an empty cache
    sizes: dict[str, int] = {}
    hosts: set[str] = set()

    def on_response(response):
        hosts.add(urlsplit(response.url).netloc)
        if response.request.resource_type in ("stylesheet", "script", "font"):
            sizes[response.url] = len(response.body())

    fresh.page.on("response", on_response)
    fresh.goto("/new/")
    fresh.page.evaluate("document.fonts.ready.then(() => true)")
    total = sum(sizes.values())
    assert any(url.endswith(".css") for url in sizes) and any(url.endswith("app.js") for url in sizes), sizes
    assert total <= FIRST_LOAD_BUDGET, f"{total} bytes: {sorted(sizes.items(), key=lambda item: -item[1])}"
    assert hosts == {urlsplit(fresh.page.url).netloc}, hosts  # nothing from a CDN
