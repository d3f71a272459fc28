"""Screenshots of the chat page for the docs.

    python3 -m tests.browser.screenshots [OUT_DIR]      # default: docs/

Writes screenshot-desktop.png (1280x800), screenshot-phone.png (375x740) and
screenshot-dark.png (dark theme, 1280x800): a conversation whose reply has a table
and a code block, with a few other conversations in the sidebar. Like the browser
tests, it runs a real daphne (own SQLite file and transcripts in a temporary folder)
and drives Debian's Chromium; the model is the scripted FakeModelServer, which here
answers the questions below with fixed Markdown, so that the page shows no test
directives.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    ChatPage,
    chromium_problem,
    launch_chromium,
    scripted_reply,
    start_live_server,
)
from tests.fake_model_server import TITLE_PREFIX, FakeModelServer
from tests.live_server import REPO

DOCS_MODEL = "Qwen/Qwen2.5-7B-Instruct"  # only a name: the scripted model answers
MAIN_QUESTION = "How do I add up one column of a CSV file in Python?"
MAIN_REPLY = """Use the standard library's `csv` module: `DictReader` gives each row as a dict keyed by the header, \
so you can pick the column by name.

| Approach | Needs | Good for |
|---|---|---|
| `csv.DictReader` | nothing extra | small and medium files |
| `pandas.read_csv` | pandas | analysis, many columns |
| `sqlite3` import | nothing extra | files larger than memory |

```python
import csv

def column_total(path, column):
    total = 0.0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            total += float(row[column] or 0)
    return total

print(column_total("sales.csv", "amount"))
```

Empty cells count as zero here; use `Decimal` instead of `float` for money."""

# question -> (title, reply). The first question is the oldest conversation.
CONVERSATIONS = {
    "Plan a three-day trip to Lisbon in spring": (
        "Lisbon trip in spring",
        "**Day 1:** Alfama and the castle.\n\n**Day 2:** Belém.\n\n**Day 3:** a day trip to Sintra.",
    ),
    "Explain quantum entanglement like I'm twelve": (
        "Quantum entanglement, simply",
        "Imagine two coins that always land on opposite sides, however far apart they are.",
    ),
    "Weeknight dinner ideas with red lentils": (
        "Red lentil dinners",
        "- Lentil dal with rice\n- Lentil and tomato soup\n- Lentil bolognese",
    ),
    "Write a haiku about autumn rain": (
        "Autumn rain haiku",
        "Cold rain on the roof —\nthe maple lets go its last\nred hand to the wind",
    ),
    MAIN_QUESTION: ("Summing a CSV column in Python", MAIN_REPLY),
}


class DocsModel(FakeModelServer):
    """The scripted model, answering the questions above (and their titles) with fixed text."""

    async def _answer(self, request, body, record):
        messages = body.get("messages") or []
        users = [m for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
        if users:
            first, last = users[0]["content"], users[-1]
            if last["content"].startswith(TITLE_PREFIX) and first in CONVERSATIONS:
                last["content"] = scripted_reply(CONVERSATIONS[first][0])
            elif last["content"] in CONVERSATIONS:
                last["content"] += " " + scripted_reply(CONVERSATIONS[last["content"]][1]) + " #delay=0.002"
        return await super()._answer(request, body, record)


def fill_conversations(chat: ChatPage) -> str:
    """Asks every question in its own chat; returns the id of the last (main) one."""
    conversation = ""
    for question, (title, _) in CONVERSATIONS.items():
        chat.by("new-chat").click()
        expect(chat.messages).to_have_count(0)
        conversation = chat.start_chat(question)
        expect(chat.sidebar_item(conversation).locator(".conversation-title")).to_have_text(title)
    return conversation


def settle(page) -> None:
    """Waits for fonts and the end of transitions (the title fade-in, the offcanvas), not of endless ones."""
    page.evaluate("document.fonts.ready.then(() => true)")
    page.wait_for_function("""() => document.getAnimations().every(
        (a) => a.playState !== "running" || a.effect.getTiming().iterations === Infinity)""")
    page.mouse.move(0, 0)  # no hover highlight


def shoot(chat: ChatPage, path: Path) -> None:
    chat.page.evaluate("document.activeElement && document.activeElement.blur()")
    settle(chat.page)
    chat.page.screenshot(path=str(path))
    size = path.stat().st_size
    print(f"{path} ({size // 1024} KB)")
    if size > 300 * 1024:
        raise SystemExit(f"{path} is over 300 KB")


def take_screenshots(browser, server, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    desktop = browser.new_context(viewport=DESKTOP, base_url=server.url, color_scheme="light")
    chat = ChatPage(desktop.new_page()).signup("sam")
    conversation = fill_conversations(chat)
    chat.goto(f"/c/{conversation}/")
    shoot(chat, out / "screenshot-desktop.png")

    state = desktop.storage_state()
    phone = ChatPage(browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, base_url=server.url,
                                         color_scheme="light", storage_state=state).new_page())
    phone.goto(f"/c/{conversation}/")
    expect(phone.replies.last).to_have_attribute("data-status", "complete")  # the pane has its state: no more scrolling by itself
    phone.page.evaluate("document.getElementById('message-scroller').scrollTop = 0")  # the question, then the reply
    shoot(phone, out / "screenshot-phone.png")

    dark = ChatPage(browser.new_context(viewport=DESKTOP, base_url=server.url, color_scheme="dark",
                                        storage_state=state).new_page())
    dark.goto(f"/c/{conversation}/")
    expect(dark.page.locator("html")).to_have_attribute("data-bs-theme", "dark")
    shoot(dark, out / "screenshot-dark.png")


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else REPO / "docs"
    problem = chromium_problem()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory(prefix="chat-screenshots-") as tmp, DocsModel() as model:
        server = start_live_server(Path(tmp), model.url, HF_MODELS=DOCS_MODEL)
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                try:
                    take_screenshots(browser, server, out)
                finally:
                    browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
