"""What a reply shows: untrusted HTML is inert, code is highlighted with a Copy button."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import scripted_reply

XSS_REPLY = (
    "Payloads follow.\n\n"
    "<script>alert(1)</script>\n\n"
    "<img src=x onerror=alert(1)>\n\n"
    "[click](javascript:alert(1))\n\n"
    '<a href="javascript:alert(1)">x</a>\n\n'
    '<svg onload="window.__xss += 1"></svg><b onmouseover="window.__xss += 1">hover</b>\n\n'
    "The end."
)
XSS_USER_TEXT = "<img src=x onerror=alert(1)> hello"

# Before any script of the page: a counter that every payload would bump, also through alert().
XSS_HOOKS = """
window.__xss = 0;
const realAlert = window.alert;
window.alert = function (...args) { window.__xss += 1; return realAlert.apply(this, args); };
"""

DOM_PROBLEMS = """() => {
  const bodies = [...document.querySelectorAll('[data-testid="message-body"]')];
  const all = [...document.querySelectorAll("*")];
  return {
    scripts: bodies.reduce((n, b) => n + b.querySelectorAll("script").length, 0),
    // The page's own icons (an <svg class="icon"> in a button it adds, such as Copy) are not content.
    images: bodies.reduce((n, b) => n + b.querySelectorAll("img, svg:not(button > svg.icon), iframe, object, embed").length, 0),
    handlers: all.filter((el) => [...el.attributes].some((a) => a.name.toLowerCase().startsWith("on")))
      .map((el) => el.outerHTML.slice(0, 120)),
    jsLinks: all.filter((el) => ["href", "src", "action", "formaction", "xlink:href"].some(
      (name) => (el.getAttribute(name) || "").replace(/[\\s\\u0000-\\u001f]/g, "").toLowerCase().startsWith("javascript:"))
    ).map((el) => el.outerHTML.slice(0, 120)),
    xss: window.__xss,
  };
}"""

CODE = 'def add(a, b):\n    """Adds."""\n    return a + b\n'


@pytest.mark.browser
def test_script_in_a_reply_or_a_message_never_runs(chat):
    dialogs = []
    chat.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    chat.page.context.add_init_script(XSS_HOOKS)
    chat.reload()

    chat.send_and_wait(f"{XSS_USER_TEXT} {scripted_reply(XSS_REPLY)}")
    reply = chat.body(chat.replies.first)
    expect(reply).to_contain_text("The end.")
    expect(reply).to_contain_text("click")  # the link text stays, its javascript: URL does not
    # The user's text is shown as text, exactly as typed.
    expect(chat.body(chat.user_messages.first)).to_contain_text(XSS_USER_TEXT)

    for where in ("streamed", "server-rendered after a reload"):
        problems = chat.page.evaluate(DOM_PROBLEMS)
        assert problems == {"scripts": 0, "images": 0, "handlers": [], "jsLinks": [], "xss": 0}, (where, problems)
        if where == "streamed":
            chat.reload()
            expect(chat.body(chat.replies.first)).to_contain_text("The end.")
            expect(chat.body(chat.user_messages.first)).to_contain_text(XSS_USER_TEXT)
    chat.body(chat.replies.first).get_by_text("hover").hover()
    chat.body(chat.replies.first).get_by_text("click").click()
    assert chat.page.evaluate("window.__xss") == 0
    assert dialogs == []


@pytest.mark.browser
def test_a_code_block_is_highlighted_and_has_a_copy_button(chat):
    chat.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    reply = chat.send_and_wait("Show me code " + scripted_reply(f"Here it is:\n\n```python\n{CODE}```\n\nDone."))
    block = reply.locator(".codehilite")
    expect(block).to_have_count(1)
    expect(block.locator("pre")).to_have_text(CODE.rstrip("\n"))
    # Pygments token classes, coloured by the stylesheet: a keyword is not plain text colour.
    keyword = block.locator("pre span.k", has_text="def")
    expect(keyword).to_have_count(1)
    expect(block.locator("pre span.nf", has_text="add")).to_have_count(1)
    colours = chat.page.evaluate(
        "([k, pre]) => [getComputedStyle(k).color, getComputedStyle(pre).color]",
        [keyword.element_handle(), block.locator("pre").element_handle()],
    )
    assert colours[0] != colours[1], colours

    copy = block.get_by_test_id("copy-code")
    expect(copy).to_be_visible()
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    copied = chat.page.evaluate("navigator.clipboard.readText()")
    assert copied.rstrip("\n") == CODE.rstrip("\n")
    expect(copy).to_have_text("Copy")  # the confirmation goes away by itself


GFM_REPLY = (
    "Here are the steps:\n1. Preheat the oven.\n2. Mix the batter.\n\n"
    "| name | qty |\n|:---|---:|\n| flour | 200 g |\n| eggs | 2 |\n\n"
    "```python\ntotal = sum(x * x for x in values)\n```\n\n"
    "The energy is $E = mc^2$, and\n\n$$\\int_0^1 x\\,dx = \\frac{1}{2}$$\n\n"
    "It costs $5 and $10. " + " ".join(f"Closing word {i}." for i in range(30))
)

SHAPE = """(body) => ({
  items: body.querySelectorAll("ol > li").length,
  rows: body.querySelectorAll("table tbody tr").length,
  code: body.querySelectorAll(".codehilite pre").length,
  codeText: [...body.querySelectorAll(".codehilite pre")].map((p) => p.textContent.trim()).join("|"),
  inlineMath: body.querySelectorAll('math[display="inline"]').length,
  blockMath: body.querySelectorAll('math[display="block"]').length,
  mathIsMathML: [...body.querySelectorAll("math")].every((m) => m.namespaceURI === "http://www.w3.org/1998/Math/MathML"),
  mathHeight: Math.round(body.querySelector('math[display="block"]')?.getBoundingClientRect().height || 0) > 10,
  dollars: (body.textContent.match(/\\$/g) || []).length,
})"""

# The last reply's shape in one evaluation: a locator resolves its element first and
# evaluates on it in a second step, and after a reload the page's `conversation.state`
# can replace the server-rendered messages in between (a detached element measures 0 px).
LAST_REPLY_SHAPE = f"""() => {{
  const replies = document.querySelectorAll('[data-testid="message"][data-role="assistant"]');
  return ({SHAPE})(replies[replies.length - 1].querySelector('[data-testid="message-body"]'));
}}"""


@pytest.mark.browser
def test_a_gfm_reply_shows_list_table_code_and_math_while_streaming_and_after_reload(chat):
    chat.send("Show me everything " + scripted_reply(GFM_REPLY) + " #delay=0.03")
    reply = chat.replies.last
    body = chat.body(reply)
    # While the closing words are still streaming, every construct is already shown as in the end.
    expect(body.locator('math[display="block"]')).to_have_count(1)
    expect(body).to_contain_text("$10")  # the prices, after the math, have streamed too
    streaming = chat.page.evaluate(LAST_REPLY_SHAPE)
    assert reply.get_attribute("data-status") == "generating", "the reply finished before it could be seen streaming"
    expected = {"items": 2, "rows": 2, "code": 1, "codeText": "total = sum(x * x for x in values)",
                "inlineMath": 1, "blockMath": 1, "mathIsMathML": True, "mathHeight": True, "dollars": 2}
    assert streaming == expected, streaming
    expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)
    assert chat.page.evaluate(LAST_REPLY_SHAPE) == expected
    # The header of the code block names its language; the Copy button sits beside it, not over the code.
    block = chat.body(chat.replies.last).locator(".codehilite")
    expect(block).to_have_attribute("data-lang", "python")
    boxes = chat.page.evaluate(
        "([b, p]) => [b.getBoundingClientRect().bottom, p.getBoundingClientRect().top]",
        [block.get_by_test_id("copy-code").element_handle(), block.locator("pre").element_handle()],
    )
    assert boxes[0] <= boxes[1] + 1, boxes
    chat.reload()
    expect(chat.body(chat.replies.last)).to_contain_text("Closing word 29.")
    assert chat.page.evaluate(LAST_REPLY_SHAPE) == expected
