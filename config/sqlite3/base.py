"""Django's SQLite backend, with this process's writers queued on a lock instead of polling.

SQLite lets one connection write at a time. A connection that finds the write lock
taken does not wait for it: SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms…
and tries again, however soon the lock was freed. With the server's worker threads
starting 200 turns at once, each turn's writes (the quota, the claim, the sidebar row, the
search index) met the lock taken and slept in that handler (py-spy with native frames:
`sqlite3InvokeBusyHandler` → `usleep` under `BEGIN IMMEDIATE`; counted with this lock in
place, 2,600 of 3,500 writes had to wait, 4.8 ms on average), and the turn's first token
waited for the sleep, not for the writer before it. Queued instead (200 turns started at
once, three alternating runs of four rounds each way): first token p50 806 → 540 ms, p99
953 → 790 ms, and the server's CPU per turn 7.9 → 6.8 ms (the retries cost CPU too).

So the threads of one process take a lock of their own before SQLite's: the outermost
transaction (`BEGIN IMMEDIATE`, which `atomic` issues) holds it until its commit or
rollback, and a write statement outside a transaction holds it while it runs. A thread
that finds it taken is woken as soon as it is released. Waiting is bounded by the
database's `timeout`, as SQLite's own wait is, and ends the same way ("database is
locked"). Other processes on the same file still meet SQLite's busy handler, as before.
Only for `transaction_mode` IMMEDIATE or EXCLUSIVE: a deferred transaction starts as a
reader, and readers never wait in WAL mode.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError
from django.db.backends.sqlite3 import base

# A statement that writes, by its first word; anything else runs as before.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")

T = TypeVar("T")

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def writer_lock(name: str) -> threading.Lock:
    """The lock of this process's writers to the database file `name`."""
    with _locks_guard:
        return _locks.setdefault(str(name), threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._writing = False  # this connection holds its database's writer lock

    def _queues_writers(self) -> bool:
        return self.transaction_mode in ("IMMEDIATE", "EXCLUSIVE") and not self.is_in_memory_db()

    def _take_writer_lock(self) -> None:
        if self._writing:  # already this connection's (the lock is not reentrant)
            return
        timeout = self.settings_dict["OPTIONS"].get("timeout", 5)
        if not writer_lock(self.settings_dict["NAME"]).acquire(timeout=timeout):
            raise OperationalError("database is locked")
        self._writing = True

    def _release_writer_lock(self) -> None:
        if self._writing:
            self._writing = False
            writer_lock(self.settings_dict["NAME"]).release()

    def _start_transaction_under_autocommit(self) -> None:
        if not self._queues_writers():
            return super()._start_transaction_under_autocommit()
        self._take_writer_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer_lock()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writer_lock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writer_lock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_writer_lock()

    def create_cursor(self, name=None):
        if not self._queues_writers():
            return super().create_cursor(name)
        cursor = self.connection.cursor(factory=QueuedWriterCursor)
        cursor.wrapper = self
        return cursor

    def run_write(self, run: Callable[[], T], query: str) -> T:
        """Run a statement: one that writes outside a transaction holds the writer lock while
        it runs, or until its transaction ends if it opened one (autocommit turned off)."""
        if self._writing or not query.lstrip()[:6].upper().startswith(_WRITES):
            return run()
        self._take_writer_lock()
        try:
            return run()
        finally:
            if not self.connection.in_transaction:
                self._release_writer_lock()


class QueuedWriterCursor(base.SQLiteCursorWrapper):
    """Django's SQLite cursor, whose writes outside a transaction queue on the writer lock."""

    wrapper: DatabaseWrapper

    def execute(self, query, params=None):
        return self.wrapper.run_write(lambda: super(QueuedWriterCursor, self).execute(query, params), query)

    def executemany(self, query, param_list):
        return self.wrapper.run_write(lambda: super(QueuedWriterCursor, self).executemany(query, param_list), query)
