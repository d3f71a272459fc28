"""The conversation store: one JSON transcript per conversation, in a local folder or on S3.

Blocking API: callers run it in a thread, never on the event loop. Every write is a
read-modify-write of the whole transcript, so every write is conditional: two writers
racing on one conversation must both land, never overwrite each other (the lost-update
bug of the original app and of Open WebUI #28742). S3 does that with `IfMatch=etag` and
a retry; the local folder with a lock held across processes and an atomic replace.
Every backend failure surfaces as `StorageUnavailable`, never as a half-written file.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .transcript import Transcript

log = logging.getLogger(__name__)
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


def _encode(transcript: Transcript) -> bytes:
    return json.dumps(transcript.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _decode(data: bytes, user_id: int, conversation_id: str) -> Transcript:
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
                body = _encode(transcript)
                if self._write(user_id, conversation_id, body, version):
                    return transcript, result
                landed = body
        raise WriteConflict(f"conversation {conversation_id} is being changed by too many writers at once; "
                            f"gave up after {self.max_attempts} attempts")

    @abstractmethod
    def delete(self, user_id: int, conversation_id: str) -> None:
        """Remove a conversation; deleting one that is already gone is not an error."""

    @abstractmethod
    def iter_ids(self) -> Iterator[tuple[int, str]]:
        """Every (user id, conversation id) in the store, for rebuilding the database."""

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


# --- local folder ----------------------------------------------------------
class LocalFolderStore(ConversationStore):
    """One JSON file per conversation under root/conversations/<user id>/<id>.json.

    Readers never lock: files are only ever replaced whole (temp file, fsync,
    os.replace). Writers of one conversation are serialised by an flock on a sidecar
    `<id>.lock` file, which also holds across processes; a striped threading lock in
    front of it keeps this process's threads queueing in memory rather than in the kernel.
    """

    def __init__(self, root: Path | str) -> None:
        super().__init__()
        self.root = Path(root)
        self._thread_locks = [threading.Lock() for _ in range(64)]

    def _path(self, user_id: int, conversation_id: str) -> Path:
        try:
            return self.root / conversation_key("", user_id, conversation_id)
        except ValueError as exc:
            raise ConversationNotFound(str(exc)) from exc

    @contextlib.contextmanager
    def _serialise(self, user_id: int, conversation_id: str) -> Iterator[None]:
        path = self._path(user_id, conversation_id)
        lock_path = path.with_suffix(".lock")
        with self._thread_locks[hash(lock_path) % len(self._thread_locks)]:
            try:
                fd = self._flock(lock_path)
            except FileNotFoundError as exc:  # the user's folder does not exist: nor does the file
                raise ConversationNotFound(f"conversation {conversation_id} not found") from exc
            except OSError as exc:
                raise StorageUnavailable(f"cannot lock conversation {conversation_id}: {exc.strerror}") from exc
            try:
                yield
            finally:
                # No lock file outlives its conversation (delete, or an update of a
                # missing id); waiters see the unlink and lock afresh.
                with contextlib.suppress(OSError):
                    if not path.exists():
                        lock_path.unlink()
                os.close(fd)  # releases the flock

    @staticmethod
    def _flock(lock_path: Path) -> int:
        """Lock the sidecar file, making sure it was not unlinked (by delete) meanwhile."""
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _temp_file(self, path: Path, body: bytes) -> Path:
        """Write `body` fully to disk beside `path` under a name no reader looks at."""
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def create(self, transcript: Transcript) -> None:
        path = self.root / conversation_key("", transcript.user_id, transcript.id)
        self._count()
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self._temp_file(path, _encode(transcript))
            os.link(tmp, path)  # atomic, fails if the name is taken, never shows a partial file
            self._fsync_dir(path.parent)
        except FileExistsError as exc:
            raise ConversationExists(f"conversation {transcript.id} already exists") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot write conversation {transcript.id}: {exc.strerror or exc}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def _read(self, user_id: int, conversation_id: str) -> tuple[Transcript, str | None]:
        path = self._path(user_id, conversation_id)
        self._count()
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ConversationNotFound(f"conversation {conversation_id} not found") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read conversation {conversation_id}: {exc.strerror or exc}") from exc
        return _decode(data, user_id, conversation_id), None

    def _write(self, user_id: int, conversation_id: str, body: bytes, version: str | None) -> bool:
        # Only called under _serialise: the lock is the condition, so this cannot conflict.
        path = self._path(user_id, conversation_id)
        self._count()
        tmp = None
        try:
            tmp = self._temp_file(path, body)
            os.replace(tmp, path)
            tmp = None
            self._fsync_dir(path.parent)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write conversation {conversation_id}: {exc.strerror or exc}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return True

    def delete(self, user_id: int, conversation_id: str) -> None:
        try:
            path = self._path(user_id, conversation_id)
        except ConversationNotFound:
            return  # a crafted id names nothing
        if not path.parent.is_dir():
            return
        with self._serialise(user_id, conversation_id):
            self._count()
            try:
                path.unlink(missing_ok=True)  # _serialise then removes the lock file
            except OSError as exc:
                raise StorageUnavailable(f"cannot delete conversation {conversation_id}: {exc.strerror}") from exc

    def check(self) -> None:
        """The transcript folder exists (or can be made) and takes a file."""
        base = self.root / "conversations"
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = base / f".check-{secrets.token_hex(4)}.tmp"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable("the transcript folder is not writable") from exc

    def iter_ids(self) -> Iterator[tuple[int, str]]:
        base = self.root / "conversations"
        try:
            self._count()
            try:
                users = sorted(p for p in base.iterdir() if p.is_dir())
            except FileNotFoundError:
                return  # nothing stored yet
            for user_dir in users:
                self._count()
                for file in sorted(user_dir.iterdir()):
                    try:
                        yield parse_conversation_key("", file.relative_to(self.root).as_posix())
                    except ValueError:
                        continue  # lock files, temp files, strangers
        except OSError as exc:
            raise StorageUnavailable(f"cannot list conversations: {exc.strerror or exc}") from exc


# --- S3 --------------------------------------------------------------------
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND_CODES = {"NoSuchKey", "404"}


def _error_code(exc: Exception) -> str:
    from botocore.exceptions import ClientError
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


class S3Store(ConversationStore):
    """One JSON object per conversation at <prefix>conversations/<user id>/<id>.json.

    Writes are conditional (create: `IfNoneMatch="*"`, update: `IfMatch=etag`), so
    several processes can share the bucket with no lock and no lost update.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region_name: str | None = None, client: Any = None) -> None:
        super().__init__()
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """Created on first use (boto3 clients are thread-safe, their creation is not)."""
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                # Fail fast on a dead endpoint: seconds, not the default minutes.
                config = Config(connect_timeout=2, read_timeout=10,
                                retries={"total_max_attempts": 2, "mode": "standard"})
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region_name, config=config)
            return self._client

    def _key(self, user_id: int, conversation_id: str) -> str:
        try:
            return conversation_key(self.prefix, user_id, conversation_id)
        except ValueError as exc:
            raise ConversationNotFound(str(exc)) from exc

    def _call(self, method: str, conversation_id: str | None = None, **kwargs: Any) -> Any:
        """One counted request; backend failures become StorageUnavailable in plain words.

        Returns None for a conditional write that lost (412/409). NoSuchKey becomes
        ConversationNotFound.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        self._count()
        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _CONFLICT_CODES and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
                return None
            if code in _NOT_FOUND_CODES and conversation_id is not None:
                raise ConversationNotFound(f"conversation {conversation_id} not found") from exc
            raise StorageUnavailable(self._explain(code, exc)) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(self._explain("", exc)) from exc

    def _explain(self, code: str, exc: Exception) -> str:
        from botocore.exceptions import ConnectionError, NoCredentialsError, ReadTimeoutError

        where = self.endpoint_url or "S3"
        if code == "NoSuchBucket":
            return f"the storage bucket {self.bucket!r} does not exist"
        if code in {"AccessDenied", "403"}:
            return f"access to the storage bucket {self.bucket!r} was denied"
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}:
            return "the storage credentials were rejected"
        if isinstance(exc, NoCredentialsError):
            return "no storage credentials are configured"
        if isinstance(exc, ConnectionError):
            return f"cannot reach the storage service at {where}"
        if isinstance(exc, ReadTimeoutError):
            return f"the storage service at {where} did not answer in time"
        return f"the storage service failed: {code or exc}"

    def create(self, transcript: Transcript) -> None:
        body = _encode(transcript)
        key = conversation_key(self.prefix, transcript.user_id, transcript.id)
        if self._call("put_object", Bucket=self.bucket, Key=key, Body=body,
                      ContentType="application/json", IfNoneMatch="*") is None:
            # Our own first attempt may have landed before a retry was refused: check.
            head = self._call("head_object", transcript.id, Bucket=self.bucket, Key=key)
            if not self._is_own_write(head.get("ETag"), body):
                raise ConversationExists(f"conversation {transcript.id} already exists")

    def _read(self, user_id: int, conversation_id: str) -> tuple[Transcript, str | None]:
        response = self._call("get_object", conversation_id, Bucket=self.bucket,
                              Key=self._key(user_id, conversation_id))
        try:
            data = response["Body"].read()
        except Exception as exc:  # the connection broke mid-body
            raise StorageUnavailable(f"cannot read conversation {conversation_id}: {exc}") from exc
        return _decode(data, user_id, conversation_id), response["ETag"]

    def _write(self, user_id: int, conversation_id: str, body: bytes, version: str | None) -> bool:
        return self._call("put_object", conversation_id, Bucket=self.bucket, Key=self._key(user_id, conversation_id),
                          Body=body, ContentType="application/json", IfMatch=version) is not None

    def _is_own_write(self, version: str | None, body: bytes) -> bool:
        # A single-part upload's ETag is the MD5 of its body (not with SSE-KMS: then
        # this says False and the update is simply retried).
        return bool(version) and version.strip('"') == hashlib.md5(body).hexdigest()

    def delete(self, user_id: int, conversation_id: str) -> None:
        try:
            key = self._key(user_id, conversation_id)
        except ConversationNotFound:
            return  # a crafted id names nothing
        self._call("delete_object", Bucket=self.bucket, Key=key)

    def check(self) -> None:
        """One HeadBucket request: the bucket exists and these credentials may use it."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        self._count()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _error_code(exc)
            reason = {"404": "the bucket does not exist", "NoSuchBucket": "the bucket does not exist",
                      "403": "access to the bucket was denied", "AccessDenied": "access to the bucket was denied"}
            raise StorageUnavailable(reason.get(code, "the storage service refused the request")) from exc
        except NoCredentialsError as exc:
            raise StorageUnavailable("no storage credentials are configured") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the storage service cannot be reached") from exc

    def iter_ids(self) -> Iterator[tuple[int, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}conversations/")
        try:
            for page in pages:
                self._count()
                for item in page.get("Contents", []):
                    try:
                        yield parse_conversation_key(self.prefix, item["Key"])
                    except ValueError:
                        log.debug("ignoring foreign key %r", item["Key"])
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(self._explain(_error_code(exc), exc)) from exc


# --- the configured store --------------------------------------------------
_store: ConversationStore | None = None
_store_lock = threading.Lock()


def get_store() -> ConversationStore:
    """The store the settings name, one per process (S3 if a bucket is set, else the folder)."""
    global _store
    with _store_lock:
        if _store is None:
            from django.conf import settings

            if settings.AWS_STORAGE_BUCKET_NAME:
                _store = S3Store(settings.AWS_STORAGE_BUCKET_NAME, prefix=settings.AWS_S3_KEY_PREFIX,
                                 endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name=settings.AWS_S3_REGION_NAME)
            else:
                _store = LocalFolderStore(settings.CHAT_DATA_DIR)
        return _store


def reset_store() -> None:
    """Forget the cached store (tests that change the settings call this)."""
    global _store
    with _store_lock:
        _store = None
