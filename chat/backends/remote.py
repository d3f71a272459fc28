"""Hugging Face / OpenAI-compatible model servers, through `huggingface_hub.AsyncInferenceClient`.

One set of HTTP connection pools per event loop, shared by every reply and title (issue
14): a profile at 100 conversations spent a quarter of the CPU in
`ssl.create_default_context`, because each request built a new client, hence a new
transport and a new TLS context. The pools are made in a worker thread, for the same
reason: their TLS context loads the system's certificates, which on the event loop
stalled every socket of the process for the first reply.
"""
from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import email.utils
import functools
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from chat.backends import chunked_body
from chat.backends.asyncio_stream import AsyncioBackend
from chat.backends.base import (
    CUT_MESSAGE,
    TIMEOUT_MESSAGE,
    Messages,
    ModelError,
    ModelStream,
    Purpose,
    WaitCallback,
    clean_messages,
    finish_reason,
)

logger = logging.getLogger(__name__)


@functools.cache
def _pooled_client_class() -> type:
    """AsyncInferenceClient that borrows the backend's pooled httpx client.

    huggingface_hub 2.4 gives each AsyncInferenceClient its own `httpx2.AsyncClient`
    (built on first use, closed by `close()`), and it enters every streamed response into
    that instance's exit stack: a response is only closed when the whole instance is.
    So one instance cannot be shared by many streams (responses would pile up, and
    stopping one stream would not close its connection). Instead each request gets a
    cheap instance whose `_get_async_client` returns the shared pools; its `close()` then
    closes only its own response, and the pools stay open.
    """
    from huggingface_hub import AsyncInferenceClient

    if not hasattr(AsyncInferenceClient, "_get_async_client"):  # fail loudly on an upgrade
        raise RuntimeError("huggingface_hub's AsyncInferenceClient no longer has _get_async_client; "
                           "chat/backends/remote.py must be adapted to share its connection pool")

    class PooledInferenceClient(AsyncInferenceClient):
        def __init__(self, *, http: ConnectionPools, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.pool_view = PoolView(http)

        async def _get_async_client(self) -> Any:
            return self.pool_view

    return PooledInferenceClient


class PoolView:
    """The shared httpx clients (`ConnectionPools`) as one request sees them.

    httpcore puts a connection back in the pool only if its response was read to the
    end; huggingface_hub stops reading at `data: [DONE]`, one chunk before the end of
    the body, so every connection would be closed after one request. When the answer
    is complete (`answer_complete`, set by the backend), the response's last bytes are
    read before it closes. A stopped or broken stream is not read on: its response is
    closed, and httpcore closes the connection instead of reusing it.
    """

    drain_seconds = 1.0

    def __init__(self, pools: ConnectionPools) -> None:
        self.pools = pools
        self.answer_complete = False
        self.response: Any = None  # the streamed response, read by the backend (`_events`)

    @contextlib.asynccontextmanager
    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with self.pools.stream(*args, **kwargs) as response:
            direct = chunked_body.for_response(response)  # before anything reads the body
            body = response.stream = _held_body_class()(response.stream, direct)
            self.response = response
            try:
                yield response
            finally:
                try:
                    if self.answer_complete:
                        await self._read_to_the_end(body)
                finally:
                    await body.release()

    async def _read_to_the_end(self, body: Any) -> None:
        # Any failure leaves the connection as it was: closed with the response, not reused.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.drain_seconds):
                await body.read_on()

    def __getattr__(self, name: str) -> Any:  # post(), ...: the pools' own
        return getattr(self.pools, name)


@functools.cache
def _held_body_class() -> type:
    """A response body read through one iterator, closed only by `release()`.

    huggingface_hub drops its iterator over the body at `data: [DONE]`; when Python
    finalizes it, httpx closes the response, and httpcore closes a connection whose body
    was not read to its end. Whether the last chunk had arrived by then is a matter of
    timing, so connections were lost now and then. This body ignores that close, and the
    backend reads the rest through the very iterator huggingface_hub was using.

    Where it applies, the chunks are read off the connection (`direct`,
    chat/backends/chunked_body.py) instead of through httpx2 and httpcore2.
    """
    import httpx2

    class HeldBody(httpx2.AsyncByteStream):
        def __init__(self, stream: Any, direct: chunked_body.ChunkedBody | None = None) -> None:
            self._stream = stream
            self.direct = direct
            self.chunks = (direct if direct is not None else stream).__aiter__()

        def __aiter__(self) -> HeldBody:
            return self

        async def __anext__(self) -> bytes:
            return await self.chunks.__anext__()

        async def aclose(self) -> None:
            """httpx's close when a reader stops: ignored, see `release()`."""

        async def read_on(self) -> None:
            async for _ in self.chunks:
                pass

        async def release(self) -> None:
            """Close for real: a body not read to its end closes its connection."""
            try:
                if isinstance(self.chunks, collections.abc.AsyncGenerator):
                    await self.chunks.aclose()
            finally:
                await self._stream.aclose()

    return HeldBody


def new_connection_pool(ssl_context: Any = None, max_idle_connections: int | None = None,
                        template: Any = None) -> Any:
    """An `httpx2.AsyncClient` configured as huggingface_hub configures its own (its event
    hooks, redirects; a factory set with `set_async_client_factory` is honoured), with a
    pool as large as the number of replies streaming at once. `template`: a client of
    huggingface_hub's to copy that from (made here if not given)."""
    import httpx2
    from huggingface_hub.utils import get_async_session

    if template is None:
        template = get_async_session()  # never used: it holds no connection, nothing to close
    if max_idle_connections is None:
        max_idle_connections = HFBackend.max_idle_connections
    client = httpx2.AsyncClient(
        event_hooks=template.event_hooks,
        follow_redirects=template.follow_redirects,
        verify=True if ssl_context is None else ssl_context,
        timeout=None,  # each request passes settings.HF_TIMEOUT
        limits=httpx2.Limits(max_connections=HFBackend.max_connections,
                             max_keepalive_connections=max_idle_connections,
                             keepalive_expiry=HFBackend.idle_seconds),
    )
    # Its sockets on asyncio's transports (chat/backends/asyncio_stream.py). httpx2 makes the
    # pool itself and has no argument for the network backend that httpcore2's pool takes;
    # the pool reads it when it opens a connection. (Proxies from the environment keep
    # their own pools, on anyio.)
    client._transport._pool._network_backend = AsyncioBackend()
    return client


class ConnectionPools:
    """Several `httpx2.AsyncClient`s, each with its own connection pool, one TLS context.

    httpcore2's pool walks every connection and every request it holds each time a
    request comes in or a response is closed: with 200 replies streaming, that walk was
    23 % of the CPU of opening a model request (py-spy, 2.1-2.2 ms per request at 200 at
    a time). A request goes to the pool with the fewest requests in flight, the first one
    on a tie: one reply at a time always uses the first pool, and so its kept-alive
    connection, while a burst is spread evenly and each walk is a fraction as long.
    """

    def __init__(self, count: int) -> None:
        import httpx2
        from huggingface_hub.utils import get_async_session

        # Made once for every pool: each loads the system's certificates (57 ms for
        # huggingface_hub's template client here; eight of them took 0.45 s).
        ssl_context, template = httpx2.create_ssl_context(), get_async_session()
        idle = max(1, -(-HFBackend.max_idle_connections // count))
        self.clients = [new_connection_pool(ssl_context, idle, template) for _ in range(count)]
        self.load = [0] * count

    def pick(self) -> int:
        load = self.load
        return load.index(min(load))

    @contextlib.asynccontextmanager
    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        index = self.pick()
        self.load[index] += 1  # counted before anything awaits: a burst is spread at once
        try:
            async with self.clients[index].stream(*args, **kwargs) as response:
                yield response
        finally:
            self.load[index] -= 1

    def __getattr__(self, name: str) -> Any:  # get(), post(): huggingface_hub's other calls
        return getattr(self.clients[self.pick()], name)

    @property
    def is_closed(self) -> bool:
        return any(client.is_closed for client in self.clients)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class HFBackend:
    """Streams from the Hugging Face router, a provider, or any OpenAI-compatible server
    (`settings.HF_BASE_URL`).

    huggingface_hub 2.4 raises `HfHubHTTPError` (with `.response`) for an HTTP error
    status, `InferenceTimeoutError` for a timeout before the headers, bare httpx2
    errors for a timeout or a broken connection while the body streams, and
    `TextGenerationError` for an error event in the stream. A body that simply ends
    without `[DONE]` ends the iteration quietly: only the missing `finish_reason`
    tells a cut reply from a finished one.

    Connections are kept and reused between requests (pools per event loop: httpx
    connections belong to the loop that opened them). A response closed before its end
    (Stop) or broken mid-body is never put back in the pool: httpcore closes such a
    connection instead of reusing it.
    """

    max_connections: int | None = None  # as before the pool: one connection per stream, no waiting line
    # httpcore2's pool walks all its connections on every request and every response
    # closed, so a single pool kept 32 idle (1.37 ms of CPU per request with 32, 1.84 ms
    # with 160). Split over 8 pools (ConnectionPools), 128 kept in all cost less than 32
    # in one: python -m bench.hf_client, 200 requests at a time (docs/models.md).
    max_idle_connections = 128  # in all, shared out among the pools
    idle_seconds = 30.0
    pool_count = 8

    def __init__(self, retry_budget: float = 10.0, first_backoff: float = 0.5, max_attempts: int = 5) -> None:
        # 5xx before the first token is retried with backoff for at most `retry_budget`
        # seconds: a provider waking a model up answers 503 for a few seconds.
        self.retry_budget = retry_budget
        self.first_backoff = first_backoff
        self.max_attempts = max_attempts
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._making: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def connection_pools(self) -> ConnectionPools:
        """The httpx clients of the running event loop, made on first use (`ready_pools()`
        makes them off the event loop first)."""
        loop = asyncio.get_running_loop()
        pools = self._pools.get(loop)
        if pools is None or pools.is_closed:
            pools = self._keep(loop, ConnectionPools(self.pool_count))
        return pools

    async def ready_pools(self) -> ConnectionPools:
        """The running loop's pools, made in a worker thread if there are none yet; the
        replies that start meanwhile wait for those."""
        loop = asyncio.get_running_loop()
        pools = self._pools.get(loop)
        if pools is not None and not pools.is_closed:
            return pools
        making = self._making.setdefault(loop, asyncio.Lock())
        async with making:
            pools = self._pools.get(loop)
            if pools is None or pools.is_closed:
                pools = self._keep(loop, await asyncio.to_thread(ConnectionPools, self.pool_count))
        return pools

    def _keep(self, loop: asyncio.AbstractEventLoop, pools: ConnectionPools) -> ConnectionPools:
        # A pool's connections refer to their loop, so a closed loop (a finished test,
        # asyncio.run() ended) stays a key until dropped here.
        for old in [old for old in self._pools if old.is_closed()]:
            del self._pools[old]
        self._pools[loop] = pools
        return pools

    async def aclose(self) -> None:
        """Close the running loop's connections (at shutdown, or at the end of a test)."""
        pools = self._pools.pop(asyncio.get_running_loop(), None)
        if pools is not None:
            await pools.aclose()

    def _client(self, model_id: str) -> Any:
        base_url = settings.HF_BASE_URL or None
        # `model` and `base_url` are mutually exclusive in the constructor; the model id
        # is passed to chat_completion() too, so it is always in the request body (an
        # OpenAI-compatible server may serve several models at one URL).
        return _pooled_client_class()(
            http=self.connection_pools(),
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
            from huggingface_hub.inference._providers._common import (
                _fetch_inference_provider_mapping,
            )
        except ImportError:  # moved in another version: let chat_completion do it
            return
        with contextlib.suppress(Exception):  # chat_completion() reports the failure
            await asyncio.to_thread(_fetch_inference_provider_mapping, model_id)

    def stream(self, model_id: str, messages: Messages, *, max_tokens: int, user: object = None,
               purpose: Purpose = "reply", on_wait: WaitCallback | None = None) -> ModelStream:
        """The reply's pieces. `user`, `purpose` and `on_wait` are for the local model's
        queue: a remote server has its own, and we never wait in line for it here."""
        return ModelStream(lambda result: self._pieces(result, model_id, clean_messages(messages), max_tokens),
                           flushes=True)

    async def _pieces(self, result: ModelStream, model_id: str, messages: Messages, max_tokens: int) -> AsyncIterator[str]:
        await self._prefetch_provider_mapping(model_id)
        client, chunks = await self._connect(model_id, messages, max_tokens)
        try:
            ended = None
            try:
                await chunks.aclose()  # huggingface_hub's own parse of the stream, never started: see _events
                async for chunk in _events(client.pool_view.response, result):
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta")
                        if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
                            yield delta["content"]
                        if choice.get("finish_reason"):
                            ended = finish_reason(choice["finish_reason"])
            except Exception as exc:  # never retried: the user has seen tokens
                raise _model_error(exc, model_id, streaming=True) from exc
            if ended is None:
                raise ModelError("model_failed", CUT_MESSAGE)
            result.finish_reason = ended
            client.pool_view.answer_complete = True  # its connection may serve the next request
        finally:
            # Also runs on aclose() (Stop): closing the client closes its response, so the
            # server sees the connection go away and stops generating; the pool stays open.
            with contextlib.suppress(Exception):
                await chunks.aclose()
            await client.close()

    async def _connect(self, model_id: str, messages: Messages, max_tokens: int) -> tuple[Any, Any]:
        """Open the stream (client, chunk iterator). Server errors are retried with
        backoff within `retry_budget`; nothing has reached the user yet."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # counted from the first failure: a cold first request
        backoff = self.first_backoff  # (imports, the pool's TLS context) is not a server's delay
        await self.ready_pools()
        for attempt in range(1, self.max_attempts + 1):
            client = self._client(model_id)
            try:
                chunks = await client.chat_completion(messages, model=model_id, stream=True, max_tokens=max_tokens,
                                                      extra_body=_continuation(messages))
                return client, chunks
            except BaseException as exc:
                await client.close()
                if not isinstance(exc, Exception):  # cancelled
                    raise
                wait = _retry_delay(exc, backoff)
                deadline = loop.time() + self.retry_budget if deadline is None else deadline
                if wait is None or attempt == self.max_attempts or loop.time() + wait > deadline:
                    raise _model_error(exc, model_id) from exc
                logger.info("Model %s answered HTTP %s; retrying in %.2fs", model_id, _status(exc), wait)
            await asyncio.sleep(wait)
            backoff *= 2
        raise AssertionError("unreachable")


async def _events(response: Any, result: ModelStream | None = None) -> AsyncIterator[dict]:
    """The stream's chunks as parsed JSON, until `data: [DONE]`; `result.flush` is awaited
    after each read's chunks have all been taken, before the next read.

    huggingface_hub turns every chunk into nested dataclasses that mirror each other
    into dicts (`parse_obj`, `asdict`): about 70 µs per token, the largest single cost of
    relaying one, against about 5 µs for `json.loads` (bench §2). The hub still builds and
    sends the request and raises for an HTTP error status; this reads what it would
    have read, the same way: lines starting with `data:`, others (comments, `event:`)
    skipped, an `error` field raised as the hub raises it."""
    held = response.stream
    # The payload as it arrives: straight off the connection where possible, else
    # through httpx2 (which decodes a compressed body).
    source = held.chunks if held.direct is not None else response.aiter_bytes()
    flush = result.flush if result is not None else None
    buffer = b""
    async for data in source:
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise ValueError("a stream chunk is not a JSON object")
            if chunk.get("error") is not None:
                raise _stream_error(chunk["error"], chunk.get("error_type"))
            yield chunk
        if flush is not None:
            await flush()


def _stream_error(error: Any, error_type: Any) -> Exception:
    """An error event of the stream, as huggingface_hub would raise it (its classes tell
    an overloaded server from a failed generation)."""
    try:
        from huggingface_hub.inference._common import _parse_text_generation_error
    except ImportError:  # moved in another version: the generic class is still told apart
        from huggingface_hub.errors import TextGenerationError

        return TextGenerationError(str(error))
    return _parse_text_generation_error(error, error_type)


def _continuation(messages: Messages) -> dict | None:
    """Continue: a conversation ending with an assistant turn asks the server to carry that
    turn on. TGI, vLLM and SGLang do so with `continue_final_message` (vLLM also needs the
    generation prompt off); a server that ignores the fields answers the turn anew."""
    if messages and messages[-1]["role"] == "assistant":
        return {"continue_final_message": True, "add_generation_prompt": False}
    return None


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
    import httpx2

    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)):
        # A kept-alive connection of the pool that the server closed meanwhile: nothing was
        # answered, so asking again on a fresh connection is safe, at once.
        return 0.0
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


