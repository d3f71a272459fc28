"""The store's contract: its errors, where a transcript lives, how it is encoded, and
the conditional read-modify-write loop that every backend shares."""
from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from chat.transcript import Transcript

T = TypeVar("T")

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class StorageError(Exception):
    """Base of every store error."""


class StorageUnavailable(StorageError):
    """The backend cannot be used right now (network, credentials, bucket, disk)."""


class ConversationNotFound(StorageError):
    pass


class ConversationExists(StorageError):
    pass


class WriteConflict(StorageUnavailable):
    """Too many writers raced on one conversation; the retries ran out."""


# --- keys ------------------------------------------------------------------
def _check_ids(user_id: int, conversation_id: str) -> None:
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 0:
        raise ValueError(f"invalid user id {user_id!r}")
    if not isinstance(conversation_id, str) or not _ID_RE.fullmatch(conversation_id):
        raise ValueError(f"invalid conversation id {conversation_id!r}")


def conversation_key(prefix: str, user_id: int, conversation_id: str) -> str:
    """Where a transcript lives. The ids are validated so no crafted id leaves the folder."""
    _check_ids(user_id, conversation_id)
    return f"{prefix}conversations/{user_id}/{conversation_id}.json"


def parse_conversation_key(prefix: str, key: str) -> tuple[int, str]:
    """(user id, conversation id) of a key made by `conversation_key`; ValueError otherwise."""
    head = f"{prefix}conversations/"
    rest = key[len(head):] if key.startswith(head) else ""
    user, _, name = rest.partition("/")
    conversation_id = name[:-5] if name.endswith(".json") else ""
    if not _USER_RE.fullmatch(user) or not _ID_RE.fullmatch(conversation_id):
        raise ValueError(f"not a conversation key: {key!r}")
    return int(user), conversation_id


def encode(transcript: Transcript) -> bytes:
    return json.dumps(transcript.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(data: bytes, user_id: int, conversation_id: str) -> Transcript:
    """Parse a stored transcript; an unreadable one is reported, not half-served."""
    try:
        transcript = Transcript.from_dict(json.loads(data))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StorageUnavailable(f"conversation {conversation_id} is stored in an unreadable form: {exc}") from exc
    if (transcript.user_id, transcript.id) != (user_id, conversation_id):
        raise StorageUnavailable(f"conversation {conversation_id} is stored under the wrong key")
    return transcript


# --- the contract ----------------------------------------------------------
class ConversationStore(ABC):
    """Shared behaviour: the conditional read-modify-write loop and the call counter.

    `calls` counts backend requests (GET, PUT, DELETE, list) so the benchmarks can
    check that a chat turn costs a constant number of them; `conflicts` counts
    conditional writes that lost a race and were retried.
    """

    max_attempts = 10  # real contention is a few writers; 8 writers with no pause needed up to 9
    backoff_base = 0.01  # seconds; doubled per attempt, capped, with full jitter
    backoff_cap = 0.5

    def __init__(self) -> None:
        self.calls = 0
        self.conflicts = 0
        self._counter_lock = threading.Lock()

    def _count(self, attr: str = "calls") -> None:
        with self._counter_lock:
            setattr(self, attr, getattr(self, attr) + 1)

    @abstractmethod
    def create(self, transcript: Transcript) -> None:
        """Store a new conversation; ConversationExists if the id is taken."""

    def load(self, user_id: int, conversation_id: str) -> Transcript:
        return self._read(user_id, conversation_id)[0]

    def update(self, user_id: int, conversation_id: str,
               mutate: Callable[[Transcript], T]) -> tuple[Transcript, T]:
        """Apply `mutate` to a fresh copy and write it back only if nobody wrote meanwhile.

        On a lost race: re-read, re-apply, retry with backoff; WriteConflict when the
        attempts run out. If `mutate` raises, nothing is written and the error propagates.
        """
        landed: bytes | None = None  # the body of our last conflicting write
        result: Any = None
        for attempt in range(self.max_attempts):
            if attempt:
                self._count("conflicts")
                time.sleep(random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt)))
            with self._serialise(user_id, conversation_id):
                transcript, version = self._read(user_id, conversation_id)
                if landed is not None and self._is_own_write(version, landed):
                    # A "conflict" that was our own write, retried by the HTTP layer after a
                    # lost response: it landed, so mutate must not be applied twice.
                    return transcript, result
                result = mutate(transcript)
                body = encode(transcript)
                if self._write(user_id, conversation_id, body, version):
                    return transcript, result
                landed = body
        raise WriteConflict(f"conversation {conversation_id} is being changed by too many writers at once; "
                            f"gave up after {self.max_attempts} attempts")

    @abstractmethod
    def delete(self, user_id: int, conversation_id: str) -> None:
        """Remove a conversation; deleting one that is already gone is not an error."""

    @abstractmethod
    def iter_ids(self, user_id: int | None = None) -> Iterator[tuple[int, str]]:
        """Every (user id, conversation id) in the store, for rebuilding the database;
        only that user's with `user_id`."""

    def delete_user(self, user_id: int) -> int:
        """Remove every transcript of one user (their account is being deleted), those the
        database no longer knows of included; returns how many. Listed first, then deleted:
        a conversation created meanwhile is the caller's to prevent."""
        ids = [conversation_id for _, conversation_id in self.iter_ids(user_id)]
        for conversation_id in ids:
            self.delete(user_id, conversation_id)
        return len(ids)

    @abstractmethod
    def check(self) -> None:
        """A cheap proof that the store works (health checks): StorageUnavailable if not,
        with a short reason that names no path, bucket, endpoint or credential."""

    # Backend hooks.
    @abstractmethod
    def _read(self, user_id: int, conversation_id: str) -> tuple[Transcript, str | None]:
        """The transcript and its version (S3 ETag), or ConversationNotFound."""

    @abstractmethod
    def _write(self, user_id: int, conversation_id: str, body: bytes, version: str | None) -> bool:
        """Write if still at `version`; False when another writer got there first."""

    def _serialise(self, user_id: int, conversation_id: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _is_own_write(self, version: str | None, body: bytes) -> bool:
        return False
