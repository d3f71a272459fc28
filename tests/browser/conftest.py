"""Fixtures and helpers of the browser tests.

- One daphne process (tests/live_server.py) for the package, with its own SQLite file
  and transcript folder under a temporary directory. Its model is the scripted
  FakeModelServer of this test process (`fake_model`, tests/conftest.py), so a test
  scripts a reply with directives in its message (`#tokens=200 #delay=0.02`,
  `#reply=<url-encoded text>`...).
- One headless Chromium for the package: Debian's /usr/bin/chromium driven by
  Playwright's sync API (`make browser` installs it; Playwright's own browsers are
  never downloaded).
- Per test, fresh browser contexts (cookies, localStorage) and a freshly signed-up
  user, so tests never see each other's conversations or rate limits. Uncaught
  JavaScript errors on any page fail the test.

Playwright's sync API marks its own event loop as running in the main thread while
it is started. These tests never touch the test database (the server has its own),
and the browser is stopped when the package's tests are done (package scope), before
the asyncio tests of the rest of the suite run.
"""
from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from tests.live_server import LiveServer, server_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "Browser-tests-passw0rd"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
TIMEOUT_MS = 10_000  # one auto-waiting step (a reply of the scripted model takes a few seconds at most)

expect.set_options(timeout=TIMEOUT_MS)


# --- The browser and the server ---------------------------------------------------


def chromium_problem() -> str | None:
    """Why the browser cannot be started, or None."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return None
    return (f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. "
            "Run `make browser` to install it (`make test` does so first).")


def launch_chromium(playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def start_live_server(tmp: Path, model_url: str, **extra: str) -> LiveServer:
    """A migrated, started daphne with its own database and transcripts under `tmp`.

    Its SECRET_KEY is fixed (an unset key changes with every process start), so that
    sessions survive a restart of the server, as in production. DEBUG serves the
    static files without collectstatic; sign-up is open whatever the caller's env says.
    """
    env = server_env(tmp, model_url, CHAT_RATE_LIMIT_MESSAGES="1000", DEBUG="1", SIGNUP_OPEN="1",
                     SECRET_KEY="browser-tests-" + secrets.token_urlsafe(24), **extra)
    server = LiveServer(env, log_path=tmp / "daphne.log")
    server.manage("migrate", "--noinput")
    return server.start()


@pytest.fixture(scope="package")
def live(tmp_path_factory, fake_model):
    server = start_live_server(tmp_path_factory.mktemp("browser-live"), fake_model.url)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def browser():
    problem = chromium_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser, live):
    """Makes browser contexts (closed after the test); JavaScript errors on their pages fail the test."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def make(server: LiveServer | None = None, **options) -> BrowserContext:
        settings = {"viewport": DESKTOP, "base_url": (server or live).url, "color_scheme": "light", **options}
        context = browser.new_context(**settings)
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", lambda page: page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}")))
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


@pytest.fixture
def chat(new_context) -> ChatPage:
    """A signed-up user on an empty chat page (desktop size)."""
    page = new_context().new_page()
    return ChatPage(page).signup()


# --- Helpers ----------------------------------------------------------------------

_names = itertools.count()


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}{os.getpid()}x{int(time.time() * 1000) % 10**8}x{next(_names)}"


def scripted_reply(text: str) -> str:
    """The directive that makes the scripted model answer exactly `text`."""
    return "#reply=" + quote(text, safe="")


def numbered_words(count: int) -> str:
    """What `#tokens=count` answers: "w0 w1 ... w(count-1)"."""
    return " ".join(f"w{i}" for i in range(count))


def word_numbers(text: str) -> list[int]:
    """The numbers of the `wN` words of a `#tokens` reply, in the order shown."""
    return [int(n) for n in re.findall(r"w(\d+)", text)]  # blocks may be glued: "w9w10"


CONVERSATION_URL = re.compile(r"/c/([^/]+)/$")


class ChatPage:
    """The chat page of one browser page, by its data-testid hooks."""

    def __init__(self, page: Page):
        self.page = page
        self.username: str | None = None

    # --- Account and navigation ---------------------------------------------------

    def signup(self, username: str | None = None) -> ChatPage:
        self.username = username or unique_username()
        page = self.page
        page.goto("/accounts/signup/")
        page.get_by_label("Username").fill(self.username)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password confirmation").fill(PASSWORD)
        page.get_by_test_id("signup-submit").click()
        page.wait_for_url("**/new/")
        self.expect_connected()
        return self

    def goto(self, path: str = "/") -> ChatPage:
        self.page.goto(path)
        self.expect_connected()
        return self

    def reload(self) -> ChatPage:
        self.page.reload()
        self.expect_connected()
        return self

    def second_window(self, new_context, **options) -> ChatPage:
        """The same user in another browser window (a new context with this one's cookies)."""
        context = new_context(storage_state=self.page.context.storage_state(), **options)
        other = ChatPage(context.new_page())
        other.username = self.username
        return other

    def expect_connected(self) -> None:
        expect(self.status).to_have_attribute("data-state", "connected")

    @property
    def conversation_id(self) -> str:
        match = CONVERSATION_URL.search(self.page.url)
        assert match, f"not on a conversation page: {self.page.url}"
        return match.group(1)

    def wait_for_conversation_url(self) -> str:
        self.page.wait_for_url(CONVERSATION_URL)
        return self.conversation_id

    # --- Elements -----------------------------------------------------------------

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    @property
    def status(self) -> Locator:
        return self.by("connection-status")

    @property
    def composer(self) -> Locator:
        return self.by("composer")

    @property
    def send_button(self) -> Locator:
        return self.by("send")

    @property
    def messages(self) -> Locator:
        return self.page.locator('[data-testid="message"]')

    @property
    def user_messages(self) -> Locator:
        return self.page.locator('[data-testid="message"][data-role="user"]')

    @property
    def replies(self) -> Locator:
        return self.page.locator('[data-testid="message"][data-role="assistant"]')

    @property
    def sidebar_items(self) -> Locator:
        return self.by("conversation-item")

    def sidebar_item(self, conversation_id: str) -> Locator:
        return self.page.locator(f'[data-testid="conversation-item"][data-id="{conversation_id}"]')

    @staticmethod
    def body(message: Locator) -> Locator:
        return message.get_by_test_id("message-body")

    # --- Actions ------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Types a message and sends it with the send button."""
        self.composer.fill(text)
        expect(self.send_button).to_be_enabled()
        self.send_button.click()

    def send_and_wait(self, text: str) -> Locator:
        """Sends a message and waits until its reply is complete; returns the reply."""
        count = self.replies.count()
        self.send(text)
        expect(self.replies).to_have_count(count + 1)
        reply = self.replies.last
        expect(reply).to_have_attribute("data-status", "complete")
        return reply

    def start_chat(self, text: str) -> str:
        """Sends the first message of a new chat, waits for its reply; returns the conversation id."""
        self.send_and_wait(text)
        return self.wait_for_conversation_url()
