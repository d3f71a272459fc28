"""A scripted OpenAI-compatible model server for tests and benchmarks.

It answers `POST /v1/chat/completions` (streamed as server-sent events, or not) and
`GET /v1/models` on loopback. Its behaviour is scripted by directives written in the
LAST user message, so a test running the chat server in another process (daphne)
can script a reply without any shared state:

    (nothing)          reply "Echo: <last user message without directives>", one word per token
    #tokens=N          reply "w0 w1 ... w(N-1)"
    #delay=0.05        seconds between tokens
    #status=429        answer that HTTP status with a JSON error body (401, 404, 503, ...)
    #retry_after=7     with #status: send a Retry-After header
    #flaky=2           answer 503 to the first 2 requests carrying this same last user
                       message, then reply normally (counted by the server: retry tests)
    #cut=3             send 3 tokens, then end the body cleanly and close: no finish_reason,
                       no [DONE] (a client sees a quiet end of stream, like a proxy cutting it)
    #abort=3           send 3 tokens, then abort the TCP connection mid-body (a client sees a
                       protocol error: incomplete chunked read)
    #fail=3            send 3 tokens, then an error event
    #reply=<text>      reply with this exact (URL-encoded) text, in chunks of 4 characters
    #hang              never answer (for timeouts)
    #linger=0.05       seconds between `data: [DONE]` and the end of the body
    #markdown=STYLE    with #tokens=N: N tokens of Markdown instead of "w0 w1 ...": `mixed`
                       (the default: headings, paragraphs, lists, a table, fenced code),
                       `para` (one long paragraph of sentences) or `code` (one long fenced
                       listing); deterministic, for benchmarks of the streaming renderer
    #stamp             append "@<send time>" to every plain word token when it is sent: the
                       wall-clock microseconds modulo 10**9 (9 digits), so a client on the same
                       machine can measure each token's latency (benchmarks)

A conversation whose last message is an assistant turn asks the model to carry that
reply on (Continue): the scripted reply goes on after the text the assistant turn
already holds (its tokens minus those it starts with), so a reply cut by `max_tokens`
and continued until it ends reads exactly as the uncut reply would.

`max_tokens` is honoured like a real server: a longer reply is cut at that many
tokens with `finish_reason: "length"`.

A title request (the last user message starts with "Give this conversation a
descriptive") ignores directives and answers `Title: "<first 3 words of the first
user message> chat"`.

Every request is recorded (`.requests` for the bodies, `.log` for the details,
including how a stream ended and the client's address), so tests can assert what the
model saw, whether the client hung up and whether it reused a connection. A client can
read a whole reply before the server has recorded how it ended: wait for
`settled(count)` before asserting on outcomes.

In-process use (a background thread with its own event loop)::

    with FakeModelServer() as server:
        settings.HF_BASE_URL = server.url     # http://127.0.0.1:PORT/v1

Standalone: ``python -m tests.fake_model_server --port 8765`` prints the URL.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

TITLE_PREFIX = "Give this conversation a descriptive"
DIRECTIVE = re.compile(r"#(tokens|delay|status|retry_after|cut|abort|fail|flaky|reply|hang|markdown|stamp|linger)(?:=(\S*))?")
STAMP_MODULO = 10**9
STAMP = re.compile(r"@(\d{9})")
STAMPABLE = re.compile(r"\s?[A-Za-z][A-Za-z0-9_]*")


@dataclass
class RequestRecord:
    """One request as the server saw it, and how its answer ended."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    peer: tuple[str, int] | None = None  # the client's address: the same for requests on one kept-alive connection
    tokens_sent: int = 0
    # "pending", "completed", "error_status", "cut", "aborted", "failed", "hang", "disconnected"
    outcome: str = "pending"
    finished: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass
class Script:
    """What the directives in the last user message ask for."""

    text: str = ""
    tokens: list[str] = field(default_factory=list)
    delay: float = 0.0
    status: int | None = None
    retry_after: str | None = None
    flaky: int = 0
    cut: int | None = None
    abort: int | None = None
    fail: int | None = None
    hang: bool = False
    stamp: bool = False
    linger: float = 0.0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _strip_directives(text: str) -> str:
    return " ".join(DIRECTIVE.sub(" ", text).split())


def _word_tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


_WORDS = ("the model reads each token and the relay sends it on to every tab that watches this "
          "conversation while the renderer keeps only the open block so work per delta stays small").split()


def markdown_tokens(count: int, style: str = "mixed") -> list[str]:
    """`count` tokens of deterministic Markdown, split roughly as a tokenizer would.

    `mixed` cycles through a heading, paragraphs (with inline code and bold), a list,
    a table and a fenced code block; `para` is one paragraph that never ends; `code`
    one fenced listing that never closes (the two worst cases of a streaming renderer).
    """
    tokens: list[str] = []
    word = iter(range(10**9))

    def words(n: int, first: bool = False) -> list[str]:
        out = [_WORDS[next(word) % len(_WORDS)] for _ in range(n)]
        return [w if first and i == 0 else " " + w for i, w in enumerate(out)]

    def sentence(first: bool = False) -> list[str]:
        out = words(9 + next(word) % 6, first)
        out[0] = out[0][:1] + out[0][1:2].upper() + out[0][2:] if not first else out[0].capitalize()
        out[-1] += "."
        return out

    def code_line(k: int) -> list[str]:
        return ["    total", " =", " total", " +", f" step_{k}", "(x", ")", "\n"]

    if style == "code":
        tokens += ["```", "python", "\n", "def", " run", "(x", "):", "\n", "    total", " =", " 0", "\n"]
        k = 0
        while len(tokens) < count:
            tokens += code_line(k)
            k += 1
    elif style == "para":
        tokens += sentence(first=True)
        while len(tokens) < count:
            tokens += sentence()
    else:
        section = 0
        while len(tokens) < count:
            tokens += ["##", " Section", f" {section}", "\n\n"]
            tokens += sentence(first=True) + sentence() + [" Use", " `relay", ".send`", " and", " **always**", " check."]
            tokens += sentence() + ["\n\n"]
            for _ in range(4):
                tokens += ["-", *words(6), "\n"]
            tokens += ["\n", "|", " name", " |", " value", " |", "\n", "|", "---", "|", "---", "|", "\n"]
            for row in range(3):
                tokens += ["|", *words(1), " |", f" {row}", " |", "\n"]
            tokens += ["\n", "```", "python", "\n", "def", " run", "(x", "):", "\n", "    total", " =", " 0", "\n"]
            for k in range(5):
                tokens += code_line(k)
            tokens += ["    return", " total", "\n", "```", "\n\n"]
            tokens += sentence(first=True) + sentence() + sentence() + ["\n\n"]
            section += 1
    return tokens[:count]


def stamp_token(token: str, now: float | None = None) -> str:
    """The token with its send time appended, if it is a plain word (see #stamp)."""
    if not STAMPABLE.fullmatch(token):
        return token
    micros = int((time.time() if now is None else now) * 1_000_000) % STAMP_MODULO
    return f"{token}@{micros:09d}"


def parse_script(messages: list[dict[str, Any]]) -> Script:
    """Read the directives of the last user message (title requests have none)."""
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    if last.startswith(TITLE_PREFIX):
        first_words = _strip_directives(users[0]).split()[:3]
        text = f'Title: "{" ".join(first_words)} chat"'
        return Script(text=text, tokens=[text])

    script = Script()
    reply: str | None = None
    markdown: str | None = None
    for match in DIRECTIVE.finditer(last):
        name, value = match.group(1), match.group(2) or ""
        if name == "tokens":
            script.tokens = [f"w{i}" if i == 0 else f" w{i}" for i in range(int(value))]
        elif name == "delay":
            script.delay = float(value)
        elif name == "status":
            script.status = int(value)
        elif name == "retry_after":
            script.retry_after = value
        elif name == "cut":
            script.cut = int(value)
        elif name == "flaky":
            script.flaky = int(value)
        elif name == "abort":
            script.abort = int(value)
        elif name == "fail":
            script.fail = int(value)
        elif name == "reply":
            reply = unquote(value)
        elif name == "hang":
            script.hang = True
        elif name == "markdown":
            markdown = value or "mixed"
        elif name == "stamp":
            script.stamp = True
        elif name == "linger":
            script.linger = float(value)
    if reply is not None:
        script.tokens = [reply[i : i + 4] for i in range(0, len(reply), 4)]
    elif markdown is not None and script.tokens:
        script.tokens = markdown_tokens(len(script.tokens), markdown)
    elif not script.tokens:
        script.tokens = _word_tokens("Echo: " + _strip_directives(last))
    if messages and messages[-1].get("role") == "assistant":
        script.tokens = _carried_on(script.tokens, _text_of(messages[-1].get("content")))
    script.text = "".join(script.tokens)
    return script


def _carried_on(tokens: list[str], written: str) -> list[str]:
    """The tokens after those `written` already holds (a continued reply); all of them if
    `written` is not a beginning of the reply (a real model would carry on anyway)."""
    done = ""
    for index, token in enumerate(tokens):
        if not written.startswith(done + token):
            return tokens[index:] if written == done else tokens
        done += token
    return [] if written == done else tokens


class FakeModelServer:
    """The server, run by aiohttp in its own event loop in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: list[str] | None = None) -> None:
        self.host = host
        self.port = port
        self.models = models or ["fake/echo"]
        self.log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._arrived = threading.Condition(self._log_lock)
        self._flaky_seen: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------
    @property
    def url(self) -> str:
        """The OpenAI-style base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received so far (a copy)."""
        with self._log_lock:
            return [record.body for record in self.log]

    def settled(self, count: int, timeout: float = 10.0) -> list[RequestRecord]:
        """The log once `count` requests have arrived and each has finished its answer
        (a client may have read the whole reply before the server records its outcome).
        Blocking: call it through asyncio.to_thread from async code."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.log) >= count, timeout):
                raise AssertionError(f"expected {count} requests, the server received {len(self.log)}")
            records = list(self.log)
        for record in records:
            if not record.finished.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"request {record.body.get('messages')!r} still {record.outcome!r} after {timeout}s")
        return records

    def clear(self) -> None:
        with self._log_lock:
            self.log.clear()
            self._flaky_seen.clear()

    def start(self) -> str:
        if self._thread is not None:
            return self.url
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-model-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self.url

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._thread = None
            self._loop = None

    def __enter__(self) -> FakeModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        # Handlers still sleeping (#hang, long #delay) would be destroyed pending.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client hanging up cancels its handler at once, so the
        # log shows "disconnected" even while the handler sleeps between tokens.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # --- handlers ----------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not JSON.")
        record = RequestRecord(path=request.path, body=body, headers=dict(request.headers),
                               peer=request.transport.get_extra_info("peername") if request.transport else None)
        with self._arrived:
            self.log.append(record)
            self._arrived.notify_all()
        try:
            return await self._answer(request, body, record)
        except (ConnectionError, asyncio.CancelledError):
            if record.outcome in ("pending", "hang"):
                record.outcome = "disconnected"
            raise
        finally:
            record.finished.set()

    async def _answer(self, request: web.Request, body: dict[str, Any], record: RequestRecord) -> web.StreamResponse:
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            record.outcome = "error_status"
            return _error(400, "messages must be a non-empty list")
        script = parse_script(messages)
        model = body.get("model") or self.models[0]

        if script.hang:
            record.outcome = "hang"
            await asyncio.Event().wait()  # until the client or the server goes away
        if script.flaky:
            key = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"][-1]
            with self._log_lock:
                seen = self._flaky_seen[key] = self._flaky_seen.get(key, 0) + 1
            if seen <= script.flaky:
                record.outcome = "error_status"
                return _error(503, f"Scripted flaky error {seen}/{script.flaky}")
        if script.status is not None:
            record.outcome = "error_status"
            headers = {"Retry-After": script.retry_after} if script.retry_after else None
            return _error(script.status, f"Scripted error {script.status}", headers)

        tokens, finish = script.tokens, "stop"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
            tokens, finish = tokens[:max_tokens], "length"

        if not body.get("stream"):
            return await self._answer_whole(request, model, tokens, finish, script, record)
        return await self._answer_stream(request, model, tokens, finish, script, record)

    async def _answer_whole(self, request, model, tokens, finish, script, record) -> web.StreamResponse:
        if script.delay:
            await asyncio.sleep(script.delay * len(tokens))
        if script.cut is not None or script.abort is not None:
            record.outcome = "aborted"
            request.transport.abort()
            raise ConnectionResetError("scripted cut")
        if script.fail is not None:
            record.outcome = "failed"
            return _error(500, "The model crashed while generating.")
        record.tokens_sent = len(tokens)
        record.outcome = "completed"
        return web.json_response(
            {
                "id": "chatcmpl-" + uuid.uuid4().hex,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": finish}
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens), "total_tokens": len(tokens)},
            }
        )

    async def _answer_stream(self, request, model, tokens, finish, script, record) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        chunk_id = "chatcmpl-" + uuid.uuid4().hex

        async def send(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        stop_at = min(n for n in (script.cut, script.abort, script.fail, len(tokens)) if n is not None)
        for i, token in enumerate(tokens[:stop_at]):
            if i and script.delay:
                await asyncio.sleep(script.delay)
            if script.stamp:
                token = stamp_token(token)
            await send({"role": "assistant", "content": token} if i == 0 else {"content": token})
            record.tokens_sent += 1

        if script.cut is not None:
            # End the body properly but say nothing more: no finish_reason, no [DONE].
            record.outcome = "cut"
            response.force_close()
            await response.write_eof()
            return response
        if script.abort is not None:
            # Drop the connection mid-body: no terminating chunk either.
            record.outcome = "aborted"
            request.transport.abort()
            raise ConnectionResetError("scripted abort")
        if script.fail is not None:
            record.outcome = "failed"
            error = {"error": "The model crashed while generating.", "error_type": "generation"}
            await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            await response.write_eof()
            return response
        await send({}, finish)
        await response.write(b"data: [DONE]\n\n")
        if script.linger:  # the body's last chunk comes later than the event that ends the answer
            await asyncio.sleep(script.linger)
        await response.write_eof()
        record.outcome = "completed"
        return response


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    # Stop cleanly on Ctrl-C and on SIGTERM (a benchmark script killing it), even when
    # started in the background by a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = FakeModelServer(args.host, args.port)
    print(server.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
