"""The local folder store: one JSON file per conversation, for one machine (and tests)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from chat.store.contract import (
    ConversationExists,
    ConversationNotFound,
    ConversationStore,
    StorageUnavailable,
    conversation_key,
    decode,
    encode,
    parse_conversation_key,
)
from chat.transcript import Transcript


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
            tmp = self._temp_file(path, encode(transcript))
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
        return decode(data, user_id, conversation_id), None

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

    def delete_user(self, user_id: int) -> int:
        count = super().delete_user(user_id)
        with contextlib.suppress(OSError):  # not empty: a conversation was created meanwhile
            (self.root / "conversations" / str(user_id)).rmdir()
        return count

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

    def iter_ids(self, user_id: int | None = None) -> Iterator[tuple[int, str]]:
        base = self.root / "conversations"
        try:
            self._count()
            try:
                if user_id is not None:
                    conversation_key("", user_id, "x")  # checks the user id
                    users = [base / str(user_id)] if (base / str(user_id)).is_dir() else []
                else:
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
