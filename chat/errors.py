"""The one exception a request can fail with, from frame parsing down to the store."""
from __future__ import annotations


class ChatError(Exception):
    """A request that cannot be served, with the protocol's error code and plain words.

    The consumer answers it with an `error` frame (never a close). `ref` is set when
    the failure is known before the frame's `ref` could be read back by the consumer
    (a frame whose later fields are bad).
    """

    def __init__(self, code: str, message: str, retry_after: float | None = None, *, ref: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.ref = ref


def not_found() -> ChatError:
    # Same answer for "absent" and "someone else's": never reveal that it exists.
    return ChatError("not_found", "That conversation or message does not exist.")


def storage_unavailable() -> ChatError:
    return ChatError(
        "storage_unavailable",
        "Your conversations can't be saved right now. Nothing was lost; please try again in a moment.",
    )
