"""A terminal client for the chat server's WebSocket protocol (docs/protocol.md).

It needs only `websockets` and the standard library (no Django, nothing else from
the project), so this one file can be copied anywhere and run as a script:

    python -m chat.client --token chat_... list
    python -m chat.client show ID
    python -m chat.client send [--conversation ID] [--model ID] "text"
    python -m chat.client chat [--conversation ID]

The token comes from `--token` or the environment variable CHAT_TOKEN; create one
with `python manage.py create_token USERNAME`. Exit status: 0 done, 1 connection
lost, 2 the server answered with an error or the reply failed, 3 could not
connect or authenticate, 130 interrupted with Ctrl+C.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sys
from datetime import datetime

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect

try:
    from chat.client.printable import printable
except ImportError:  # run as a copied script, with printable.py beside it
    from printable import printable

DEFAULT_URL = "ws://127.0.0.1:8000/ws/chat/"
CLOSE_UNAUTHENTICATED = 4401
EXIT_LOST, EXIT_ERROR, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 3, 130
CHAT_HELP = "Type a message and press Enter. Commands: /new, /list, /open ID, /quit. Ctrl+C stops a reply."


class ClientError(Exception):
    """Ends the command: the message goes to stderr, `status` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR):
        super().__init__(message)
        self.status = status


class ChatClient:
    """One authenticated socket: requests carry a `ref`, frames are read one at a time."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.socket = None
        self._closing = contextlib.ExitStack()
        self.hello: dict = {}
        self.conversations: dict[str, dict] = {}  # kept current from hello and later events
        self.interrupted = False
        self._refs = itertools.count(1)

    def connect(self) -> dict:
        """Open the socket (a bearer token, no Origin: not a browser) and read `hello`."""
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            # No flow control: frames may pile up unread while the prompt waits, and a
            # paused reader would stop answering the keepalive pings.
            self.socket = self._closing.enter_context(
                connect(self.url, additional_headers=headers, max_queue=None, open_timeout=10))
        except InvalidStatus as refused:
            raise ClientError(f"the server refused the connection (HTTP {refused.response.status_code})", EXIT_REFUSED) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as failure:
            raise ClientError(f"cannot connect to {self.url}: {failure}", EXIT_REFUSED) from None
        hello = self.next_frame(timeout=10)
        if hello is None or hello.get("type") != "hello":
            raise ClientError(f"the server at {self.url} did not say hello", EXIT_REFUSED)
        return hello

    def close(self) -> None:
        """A normal close (1000), also after an error or Ctrl+C."""
        self._closing.close()

    def request(self, type: str, **fields) -> str:
        """Send one request; return its `ref`, which the direct answer echoes."""
        ref = f"c{next(self._refs)}"
        try:
            self.socket.send(json.dumps({"type": type, "ref": ref, **fields}))
        except ConnectionClosed as closed:
            raise self._lost(closed) from None
        return ref

    def next_frame(self, timeout: float | None = None) -> dict | None:
        """The next frame, or None when `timeout` seconds pass without one."""
        try:
            frame = json.loads(self.socket.recv(timeout=timeout))
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            raise self._lost(closed) from None
        self._track(frame)
        return frame

    def drain(self) -> None:
        """Read the frames that arrived while nobody was listening (e.g. a new title)."""
        while self.next_frame(timeout=0) is not None:
            pass

    def wait_for(self, ref: str, type: str) -> dict:
        """The answer of type `type` to the request `ref`; its `error` raises ClientError."""
        while True:
            frame = self.next_frame()
            if frame.get("ref") != ref:
                continue
            if frame["type"] == "error":
                raise ClientError(f"{frame['code']}: {frame['message']}")
            if frame["type"] == type:
                return frame

    def open(self, conversation: str) -> dict:
        return self.wait_for(self.request("conversation.open", conversation=conversation), "conversation.state")

    def send(self, conversation: str | None, content: str, model: str | None = None, out=None) -> dict:
        """Send a message and write its reply to `out` as it streams; return the
        `reply.completed` or `reply.failed` frame. Ctrl+C meanwhile stops the reply."""
        limit = self.hello.get("limits", {}).get("max_content_chars")
        if limit and len(content) > limit:
            raise ClientError(f"too_large: messages are limited to {limit} characters")
        fields = {"conversation": conversation, "content": content, **({"model": model} if model else {})}
        with self.stop_on_interrupt():
            created = self.wait_for(self.request("message.send", **fields), "message.created")
            return self.follow(created["conversation"], created["message"]["id"], out or sys.stdout)

    def follow(self, conversation: str, parent: str, out) -> dict:
        """Print the reply to `parent` as its deltas come, in `seq` order, each once."""
        reply, expected, pending, shown, stop_sent = None, 0, {}, [], False
        while True:
            if self.interrupted and not stop_sent:
                self.request("generation.stop", conversation=conversation)
                stop_sent = True
            frame = self.next_frame(timeout=0.2)
            if frame is None or frame.get("conversation") != conversation:
                continue
            kind = frame["type"]
            if kind == "reply.started" and frame["parent"] == parent:
                reply = frame["message"]
            elif kind == "reply.delta" and frame["message"] == reply and frame["seq"] >= expected:
                pending[frame["seq"]] = frame["delta"]
                while expected in pending:  # a gap waits for its delta; duplicates were dropped above
                    shown.append(pending.pop(expected))
                    _write(out, shown[-1])
                    expected += 1
            elif kind in ("reply.completed", "reply.failed") and (
                frame["message"]["id"] == reply or (reply is None and frame["message"].get("parent") == parent)
            ):
                text, content = "".join(shown), frame["message"].get("content", "")
                if content.startswith(text):  # the stored reply is the reference: show what was missed
                    _write(out, content[len(text):])
                _write(out, "\n")
                return frame

    @contextlib.contextmanager
    def stop_on_interrupt(self):
        """While a reply streams, Ctrl+C asks the server to stop it; a second Ctrl+C gives up."""

        def on_interrupt(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        self.interrupted = False
        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def recent(self) -> list[dict]:
        """The conversations known so far, newest first."""
        return sorted(self.conversations.values(), key=lambda c: _when(c["updated_at"]), reverse=True)

    def _track(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "hello":
            self.hello = frame
            self.conversations = {c["id"]: c for c in frame.get("conversations", [])}
        elif kind in ("conversation.created", "conversation.updated", "conversation.state"):
            self.conversations[frame["conversation"]["id"]] = frame["conversation"]
        elif kind == "conversation.deleted":
            self.conversations.pop(frame["conversation"], None)

    @staticmethod
    def _lost(closed: ConnectionClosed) -> ClientError:
        if closed.rcvd is not None and closed.rcvd.code == CLOSE_UNAUTHENTICATED:
            return ClientError("authentication failed: check your token", EXIT_REFUSED)
        return ClientError(f"connection lost: {closed}", EXIT_LOST)


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def _write(out, text: str) -> None:
    if text:
        out.write(printable(text))
        out.flush()


def print_conversations(client: ChatClient) -> None:
    conversations = client.recent()
    if not conversations:
        print("no conversations yet", file=sys.stderr)
    for c in conversations:
        updated = _when(c["updated_at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")  # local time
        print(f"{c['id']}  {updated}  {printable(c['title'] or '(untitled)')}")


def print_branch(state: dict) -> None:
    """One `role: content` line (or paragraph) per message of the active branch."""
    for message in state["messages"]:
        status = message.get("status")
        label = message["role"] + (f" [{status}]" if status not in (None, "complete") else "")
        print(f"{label}: {printable(message['content'])}")
    if state.get("generating"):
        print(f"assistant [writing]: {printable(state['generating']['content'])}")


def report_end(final: dict) -> int:
    """After a reply: a failure or a stop is told on stderr; returns the exit status."""
    if final["type"] == "reply.failed":
        error = final.get("error", {})
        print(printable(f"reply failed: {error.get('code')}: {error.get('message')}"), file=sys.stderr)
        return EXIT_ERROR
    if final.get("stopped"):
        print("[stopped]", file=sys.stderr)
    elif (final.get("message") or {}).get("status") == "cut":
        print("[cut at the length limit]", file=sys.stderr)
    return 0


def run_list(client: ChatClient, args) -> int:
    print_conversations(client)
    return 0


def run_show(client: ChatClient, args) -> int:
    print_branch(client.open(args.id))
    return 0


def run_send(client: ChatClient, args) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    final = client.send(args.conversation, text, args.model)
    print(f"conversation {final['conversation']}", file=sys.stderr)
    status = report_end(final)
    return EXIT_INTERRUPTED if final.get("stopped") and client.interrupted else status


def run_chat(client: ChatClient, args) -> int:
    conversation = args.conversation
    if conversation:
        print_branch(client.open(conversation))
    print(CHAT_HELP, file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command, _, argument = line.partition(" ")
        try:
            if not line:
                continue
            elif command == "/quit":
                return 0
            elif command == "/new":
                conversation = None
                print("(new conversation)", file=sys.stderr)
            elif command == "/list":
                client.drain()
                print_conversations(client)
            elif command == "/open" and argument.strip():
                print_branch(client.open(argument.strip()))
                conversation = argument.strip()
            elif command.startswith("/"):
                print(CHAT_HELP, file=sys.stderr)
            else:
                final = client.send(conversation, line, args.model)
                conversation = final["conversation"]
                report_end(final)
        except ClientError as error:
            if error.status != EXIT_ERROR:
                raise  # the connection is gone
            print(error, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.client", description="Terminal client for the chat server.")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the chat socket (default {DEFAULT_URL})")
    parser.add_argument("--token", help="API token (default: the CHAT_TOKEN environment variable)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list your conversations, newest first").set_defaults(run=run_list)
    show = commands.add_parser("show", help="print a conversation's active branch")
    show.add_argument("id")
    show.set_defaults(run=run_show)
    send = commands.add_parser("send", help="send one message and print the reply")
    send.add_argument("--conversation", help="continue this conversation (default: a new one)")
    send.add_argument("--model", help="the model for the reply")
    send.add_argument("text", help='the message ("-" reads it from stdin)')
    send.set_defaults(run=run_send)
    chat = commands.add_parser("chat", help="chat interactively")
    chat.add_argument("--conversation", help="continue this conversation")
    chat.add_argument("--model", help="the model for new conversations")
    chat.set_defaults(run=run_chat)
    args = parser.parse_args(argv)

    token = args.token or os.environ.get("CHAT_TOKEN")
    if not token:
        print("no API token: pass --token or set CHAT_TOKEN (create one with "
              "`python manage.py create_token USERNAME`)", file=sys.stderr)
        return EXIT_REFUSED
    client = ChatClient(args.url, token)
    try:
        client.connect()
        return args.run(client, args)
    except ClientError as error:
        print(error, file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
