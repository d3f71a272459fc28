"""Accessibility: axe-core finds no violation on any page, in either theme.

axe-core is the npm package pinned in .ci/js/package.json (`make lint-js` runs `npm ci`
there before the suite); the test reads its axe.min.js from .ci/js/node_modules and
installs nothing. The pages' Content-Security-Policy forbids the inline script that
injects it, so these browser contexts bypass the policy (what is checked here is the
markup and the colours, not the policy).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, ChatPage, unique_username

AXE = Path(__file__).resolve().parents[2] / ".ci" / "js" / "node_modules" / "axe-core" / "axe.min.js"

# Every rule axe runs by default (WCAG 2.0-2.2 A and AA, and its best practices).
# Finite animations (a new title fading in, a flash) are let finish first: axe measures
# contrast on the colours of the moment, and a title at half opacity is not the page.
RUN_AXE = """async () => {
  const finite = document.getAnimations().filter((a) => Number.isFinite(a.effect?.getComputedTiming().endTime));
  await Promise.all(finite.map((a) => a.finished.catch(() => null)));
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + n.failureSummary.replace(/\\s+/g, " ")),
  }));
}"""


def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix .ci/js` (make lint-js does it)", pytrace=False)
    return AXE.read_text()


def violations(page, where: str) -> list[str]:
    """axe's violations on the page as it is now, one readable line each."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(content=axe_source())
    found = page.evaluate(RUN_AXE)
    return [f"{where}: {v['id']} ({v['impact']}) {v['help']}: {v['nodes']}" for v in found]


def branched_conversation(chat: ChatPage) -> str:
    """A conversation whose first question has two versions, its reply with a table and code."""
    conversation = chat.start_chat("Show me a table #markdown=mixed #tokens=60")
    first = chat.user_messages.first
    first.hover()
    first.get_by_test_id("edit").click()
    chat.by("edit-input").fill("Show me another table #markdown=mixed #tokens=40")
    chat.by("edit-save").click()
    expect(chat.user_messages.first.get_by_test_id("branch-counter")).to_have_text("2 / 2")
    expect(chat.replies.last).to_have_attribute("data-status", "complete")
    return conversation


@pytest.mark.browser
def test_axe_finds_no_violation_on_any_page_in_either_theme(new_context):
    context = new_context(bypass_csp=True)
    chat = ChatPage(context.new_page()).signup()
    page = chat.page
    found: list[str] = []
    found += violations(page, "new chat")

    conversation = branched_conversation(chat)
    chat.by("settings-toggle").click()
    chat.by("share").click()
    share_link = chat.by("share-link")
    expect(share_link).not_to_have_value("")
    share_url = share_link.input_value()
    found += violations(page, "chat, settings panel open")
    chat.by("settings-toggle").click()

    # The sidebar's parts: a pinned conversation, the Archived section open, a "…" menu open,
    # search results with their words marked.
    chat.by("new-chat").click()
    archived = chat.start_chat("Archive me for the audit")
    chat.sidebar_item(archived).get_by_test_id("conversation-menu").click()
    chat.sidebar_item(archived).get_by_test_id("archive").click()
    expect(chat.sidebar_item(archived)).to_have_count(0)
    chat.by("archived-toggle").click()
    expect(chat.by("archived-item")).to_be_visible()
    pinned = chat.sidebar_item(conversation)
    pinned.get_by_test_id("conversation-menu").click()
    pinned.get_by_test_id("pin").click()
    expect(pinned.locator(".conversation-group")).to_have_text("Pinned")
    pinned.get_by_test_id("conversation-menu").click()
    found += violations(page, "sidebar: pinned, archived open, a menu open")
    page.keyboard.press("Escape")
    chat.by("search").fill("table")
    chat.by("search").press("Enter")
    expect(chat.by("search-result").first.locator("mark").first).to_be_visible()
    found += violations(page, "search results")
    chat.by("search").press("Escape")

    page.goto("/settings/")
    page.get_by_test_id("create-token").click()
    expect(page.get_by_test_id("token-list")).to_be_visible()
    found += violations(page, "settings")

    state = context.storage_state()
    anonymous = new_context(bypass_csp=True)
    for theme in ("light", "dark"):
        signed_in = new_context(bypass_csp=True, storage_state=state, color_scheme=theme)
        chat = ChatPage(signed_in.new_page()).goto(f"/c/{conversation}/")
        expect(chat.page.locator("html")).to_have_attribute("data-bs-theme", theme)
        expect(chat.replies.last).to_have_attribute("data-status", "complete")
        found += violations(chat.page, f"branched conversation ({theme})")
        chat.page.goto("/settings/")
        found += violations(chat.page, f"settings ({theme})")

        phone = ChatPage(new_context(bypass_csp=True, storage_state=state, color_scheme=theme, viewport=PHONE,
                                     is_mobile=True, has_touch=True).new_page()).goto(f"/c/{conversation}/")
        found += violations(phone.page, f"phone ({theme})")
        phone.by("sidebar-toggle").tap()
        expect(phone.page.locator("#sidebar")).to_be_in_viewport()
        found += violations(phone.page, f"phone, conversations open ({theme})")

        visitor = anonymous.new_page()
        visitor.emulate_media(color_scheme=theme)
        for path, name in ((share_url, "share"), ("/accounts/login/", "login"), ("/accounts/signup/", "signup")):
            visitor.goto(path)
            expect(visitor.locator("html")).to_have_attribute("data-bs-theme", theme)
            found += violations(visitor, f"{name} ({theme})")
            if name == "share":
                expect(visitor.get_by_role("link", name="Start your own chat")).to_be_visible()
        visitor.goto("/accounts/login/")
        visitor.get_by_label("Username").fill(unique_username("nobody"))
        visitor.get_by_label("Password").fill("wrong-password")
        visitor.get_by_test_id("login-submit").click()
        expect(visitor.get_by_test_id("error")).to_be_visible()
        found += violations(visitor, f"login with an error ({theme})")
        visitor.close()

    assert not found, "axe found violations:\n" + "\n".join(found)
