"""Issue 16, item 4, in real Chromium: a page on another port of the same host, which the
browser sends the user's cookies from, cannot open her socket."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

HOSTILE_PAGE = """<!doctype html><title>waiting</title><script>
const socket = new WebSocket("%s");
socket.onmessage = (event) => { document.title = "read " + JSON.parse(event.data).type; };
socket.onclose = (event) => { if (!document.title.startsWith("read")) document.title = "closed " + event.code; };
</script>"""


@pytest.fixture
def other_port_page(live) -> Iterator[str]:
    """A page served from another port of the server's host, opening the chat socket."""
    body = (HOSTILE_PAGE % live.ws_url).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((live.host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{live.host}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_page_from_another_port_cannot_open_a_logged_in_users_socket(chat, other_port_page):
    chat.start_chat("a secret conversation")
    hostile = chat.page.context.new_page()  # same browser, same cookies for this host
    hostile.goto(other_port_page)
    expect(hostile).to_have_title("closed 1006")  # the handshake was refused: no hello, nothing read
    chat.reload()  # the user's own page still connects
