"""The terminal client (chat/client/terminal.py), end to end against a live daphne process.

The server runs in its own process with its own SQLite file and transcript folder
(tests/live_server.py); the model is the scripted FakeModelServer of this test
process. The client runs as `python -m chat.client`, exactly as a user runs it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.live_server import REPO, LiveServer, free_port, server_env

CLIENT = [sys.executable, "-m", "chat.client"]
CONVERSATION_LINE = re.compile(r"^conversation (\w+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def live(tmp_path_factory, fake_model):
    tmp = tmp_path_factory.mktemp("live")
    server = LiveServer(server_env(tmp, fake_model.url, CHAT_RATE_LIMIT_MESSAGES="1000"), log_path=tmp / "daphne.log")
    server.manage("migrate", "--noinput")
    server.token = server.create_token("alice")
    with server:
        yield server


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE" and "proxy" not in k.lower()}
    return {**env, "PYTHONUNBUFFERED": "1"}


def run_client(live, *args, token=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLIENT, "--url", live.ws_url, "--token", token or live.token, *args], cwd=REPO,
                          env=client_env(), capture_output=True, text=True, timeout=timeout)


def conversation_of(stderr: str) -> str:
    match = CONVERSATION_LINE.search(stderr)
    assert match, f"no conversation id on stderr: {stderr!r}"
    return match.group(1)


class Running:
    """A client subprocess driven through its stdin, its output collected as it comes."""

    def __init__(self, live, *args):
        self.process = subprocess.Popen(
            [*CLIENT, "--url", live.ws_url, "--token", live.token, *args], cwd=REPO, env=client_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.out, self.err = bytearray(), bytearray()
        self._readers = [threading.Thread(target=self._collect, args=pipe, daemon=True)
                         for pipe in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(pipe, into: bytearray) -> None:
        while chunk := pipe.read1(4096):
            into.extend(chunk)

    @property
    def stdout(self) -> str:
        return self.out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.decode(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 20, stream: str = "stdout") -> None:
        """Wait for `text` in stdout (or stderr): the two pipes are read by separate threads."""
        deadline = time.monotonic() + timeout
        read = lambda: getattr(self, stream)  # noqa: E731
        while read().count(text) < count:
            if time.monotonic() > deadline or self.process.poll() is not None and read().count(text) < count:
                raise AssertionError(f"waited for {text!r} x{count}; stdout {self.stdout!r}, stderr {self.stderr!r}")
            time.sleep(0.02)

    def type(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def end_input(self) -> None:
        self.process.stdin.close()

    def finish(self, timeout: float = 20) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the client did not exit; stdout {self.stdout!r}, stderr {self.stderr!r}") from None
        for reader in self._readers:
            reader.join(5)
        return code


# --- One-shot commands ------------------------------------------------------------


@pytest.mark.slow
def test_send_prints_the_streamed_reply(live):
    done = run_client(live, "send", "hello #tokens=5")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "w0 w1 w2 w3 w4\n"
    conversation_of(done.stderr)


@pytest.mark.slow
def test_list_shows_the_new_conversation_with_its_title(live):
    conversation = conversation_of(run_client(live, "send", "titled conversation please").stderr)
    deadline = time.monotonic() + 15
    while True:  # the title is made after the reply, by a second model call
        listing = run_client(live, "list")
        assert listing.returncode == 0, listing.stderr
        first = listing.stdout.splitlines()[0]
        if "titled conversation" in first.lower() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert first.startswith(conversation + "  "), listing.stdout  # newest first
    assert "titled conversation please chat" in first.lower()
    assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", first), first


@pytest.mark.slow
def test_show_prints_the_active_branch(live):
    conversation = conversation_of(run_client(live, "send", "hello #tokens=3").stderr)
    follow_up = run_client(live, "send", "--conversation", conversation, "again #tokens=2")
    assert follow_up.returncode == 0 and follow_up.stdout == "w0 w1\n", follow_up.stderr
    assert conversation_of(follow_up.stderr) == conversation

    shown = run_client(live, "show", conversation)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "user: hello #tokens=3\nassistant: w0 w1 w2\nuser: again #tokens=2\nassistant: w0 w1\n"


@pytest.mark.slow
def test_show_of_an_unknown_conversation_is_an_error(live):
    done = run_client(live, "show", "nosuchconversation")
    assert done.returncode == 2
    assert done.stderr.startswith("not_found: ")


@pytest.mark.slow
def test_an_error_frame_exits_2_with_its_code(live):
    done = run_client(live, "send", "--model", "no/such-model", "hello")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("model_unavailable: ")


@pytest.mark.slow
def test_a_failed_reply_exits_2_with_the_error(live):
    done = run_client(live, "send", "this fails #status=401")
    assert done.returncode == 2
    assert "reply failed: model_unavailable: " in done.stderr


@pytest.mark.slow
def test_a_bad_token_exits_3(live):
    done = run_client(live, "list", token="chat_not-a-real-token")
    assert done.returncode == 3
    assert "authentication failed: check your token" in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_no_server_exits_3():
    url = f"ws://127.0.0.1:{free_port()}/ws/chat/"
    done = subprocess.run([*CLIENT, "--url", url, "--token", "x", "list"], cwd=REPO, env=client_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert f"cannot connect to {url}" in done.stderr and "refused" in done.stderr.lower()


# --- Interactive mode ---------------------------------------------------------------


@pytest.mark.slow
def test_chat_sends_each_line_and_exits_on_end_of_input(live):
    chat = Running(live, "chat")
    chat.wait_for("you> ")
    chat.type("hi there #tokens=3")
    chat.wait_for("w0 w1 w2\n")
    chat.wait_for("you> ", count=2)
    chat.end_input()
    assert chat.finish() == 0, chat.stderr
    assert chat.stdout == "you> w0 w1 w2\nyou> \n"


@pytest.mark.slow
def test_chat_commands(live):
    conversation = conversation_of(run_client(live, "send", "first words #tokens=2").stderr)
    chat = Running(live, "chat")
    chat.type(f"/open {conversation}")
    chat.wait_for("assistant: w0 w1\n")
    chat.type("second #tokens=1")  # continues the opened conversation
    chat.wait_for("you> w0\n")
    chat.type("/new")
    chat.type("a new one #tokens=4")
    chat.wait_for("w0 w1 w2 w3\n")
    chat.type("/list")
    chat.type("/quit")
    assert chat.finish() == 0, chat.stderr
    lines = chat.stdout.replace("you> ", "\n").splitlines()
    listed = [line.split()[0] for line in lines if re.match(r"\w{32}  ", line)]
    assert conversation in listed

    shown = run_client(live, "show", conversation).stdout
    assert shown == "user: first words #tokens=2\nassistant: w0 w1\nuser: second #tokens=1\nassistant: w0\n"


# --- Ctrl+C stops the reply, and the server keeps it as stopped -------------------------


def assert_stored_as_stopped(live, conversation: str) -> None:
    shown = run_client(live, "show", conversation)
    assert shown.returncode == 0, shown.stderr
    reply = shown.stdout.splitlines()[-1]
    assert reply.startswith("assistant [stopped]: w0"), shown.stdout
    assert 1 <= len(reply.split(": ", 1)[1].split()) < 400


@pytest.mark.slow
def test_ctrl_c_stops_the_reply_of_send(live):
    send = Running(live, "send", "long #tokens=400 #delay=0.02")
    send.wait_for("w0")
    send.process.send_signal(signal.SIGINT)
    assert send.finish() == 130, send.stderr
    assert "[stopped]" in send.stderr
    assert "w399" not in send.stdout and send.stdout.endswith("\n")
    assert_stored_as_stopped(live, conversation_of(send.stderr))


@pytest.mark.slow
def test_ctrl_c_in_chat_stops_the_reply_and_returns_to_the_prompt(live):
    chat = Running(live, "chat")
    chat.type("long #tokens=400 #delay=0.02")
    chat.wait_for("w0 w1")
    chat.process.send_signal(signal.SIGINT)
    chat.wait_for("you> ", count=2)
    chat.wait_for("[stopped]", stream="stderr")
    chat.type("after the stop #tokens=2")  # the conversation is free again
    chat.wait_for("w0 w1\n")
    chat.end_input()
    assert chat.finish() == 0, chat.stderr

    newest = run_client(live, "list").stdout.splitlines()[0].split()[0]
    shown = run_client(live, "show", newest).stdout.splitlines()
    assert shown[0] == "user: long #tokens=400 #delay=0.02"
    assert shown[1].startswith("assistant [stopped]: w0") and len(shown[1].split()) < 400
    assert shown[2:] == ["user: after the stop #tokens=2", "assistant: w0 w1"]


# --- Without a server: the client stands alone -------------------------------------------


def test_the_client_imports_nothing_from_django_or_the_project():
    code = ("import sys\n"
            "for name in ('django', 'channels', 'daphne', 'consumers', 'config'): sys.modules[name] = None\n"
            "import chat.client.terminal\n"
            "loaded = {m for m in sys.modules if m == 'chat' or m.startswith(('chat.', 'bench', 'tests'))}\n"
            "assert loaded <= {'chat', 'chat.client', 'chat.client.terminal', 'chat.client.printable'}, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=client_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_deltas_are_applied_in_seq_order_once():
    """Out-of-order and repeated deltas (which a live server cannot be made to send on
    cue) are reassembled by `seq`; frames of other replies are ignored."""
    import io
    import json

    from chat.client.terminal import ChatClient

    frames = [
        {"type": "reply.started", "conversation": "c", "message": "r", "parent": "u", "model": "m"},
        {"type": "reply.delta", "conversation": "c", "message": "r", "seq": 1, "delta": "b"},
        {"type": "reply.delta", "conversation": "c", "message": "other", "seq": 0, "delta": "X"},
        {"type": "reply.delta", "conversation": "c", "message": "r", "seq": 0, "delta": "a"},
        {"type": "reply.delta", "conversation": "c", "message": "r", "seq": 0, "delta": "a"},
        {"type": "reply.delta", "conversation": "c", "message": "r", "seq": 2, "delta": "c"},
        {"type": "reply.delta", "conversation": "c", "message": "r", "seq": 1, "delta": "b"},
        {"type": "reply.completed", "conversation": "c", "message": {"id": "r", "content": "abcd"}, "stopped": False},
    ]

    class ScriptedSocket:
        def recv(self, timeout=None):
            return json.dumps(frames.pop(0))

    client = ChatClient("ws://unused", "token")
    client.socket = ScriptedSocket()
    out = io.StringIO()
    final = client.follow("c", "u", out)
    assert out.getvalue() == "abcd\n"  # "d": only in the stored reply, shown at the end
    assert final["type"] == "reply.completed"
