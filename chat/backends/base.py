"""What every model backend shares: the model list entry, the error a user sees, and the
stream of text pieces that tells its caller how the generation ended."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Messages = list[dict[str, str]]
Purpose = Literal["reply", "title"]
FinishReason = Literal["stop", "length"]
WaitCallback = Callable[[int], None]
"""Told how many generations will run before this one (`ahead`), each time that number
changes while it waits for the local model, and 0 when it starts."""

CUT_MESSAGE = "The model stopped in the middle of its reply."
TIMEOUT_MESSAGE = "The model did not answer in time."


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
        # "model_unavailable", "rate_limited", "busy" (too many replies of this user
        # waiting for the local model) or "model_failed"
        self.code = code
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


class ModelStream(AsyncIterator[str]):
    """The text pieces of one generation, and how it ended.

    After the iteration ends without an error, `finish_reason` is "stop" (the model
    finished its answer) or "length" (it was cut by `max_tokens`: the reply stops
    mid-sentence and a user may want to continue it). It stays None while streaming,
    after `aclose()` (Stop) and after a ModelError. `aclose()` stops the generation.
    """

    # Set by the reader: awaited by a backend that `flushes` each time it has handed over
    # every piece of one read and is about to wait for the next (chat/replies/task.py sends
    # them as one delta there, in the stream's own turn of the event loop).
    flush: Callable[[], Awaitable[None]] | None = None

    def __init__(self, generate: Callable[[ModelStream], AsyncIterator[str]], *, flushes: bool = False) -> None:
        self.finish_reason: FinishReason | None = None
        self.flushes = flushes  # this backend awaits `flush` between reads
        self._pieces = generate(self)

    def __aiter__(self) -> ModelStream:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aclose(self) -> None:
        await self._pieces.aclose()  # type: ignore[attr-defined]


class Backend(Protocol):
    def stream(
        self,
        model_id: str,
        messages: Messages,
        *,
        max_tokens: int,
        user: object = None,
        purpose: Purpose = "reply",
        on_wait: WaitCallback | None = None,
    ) -> ModelStream: ...


def finish_reason(value: object) -> FinishReason:
    """A server's finish_reason in our two words: only "length" means cut by the limit
    ("stop", "eos_token", "stop_sequence", ... all mean the model ended its answer)."""
    return "length" if value == "length" else "stop"


def clean_messages(messages: Messages) -> Messages:
    """Only what a chat API understands: role and content."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]
