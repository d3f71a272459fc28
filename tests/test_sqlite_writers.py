"""The SQLite backend queues one process's writers on a lock (config/sqlite3/base.py).

These tests open a SQLite file of their own through the backend, whatever database the
suite runs on, with SQLite's own busy timeout at 0 on the waiting connection: a writer
that met the write lock taken would fail at once with "database is locked", so a write
that succeeds there waited on the process's lock, not in SQLite's busy handler.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import OperationalError, connections, transaction

from config.sqlite3.base import writer_lock
from tests.test_production import REPO, run_django

ALIAS = "writers"
WAIT = 10  # seconds: only reached when the code under test is broken


@pytest.fixture
def database(tmp_path, django_db_blocker):
    """A file database on the queued backend, as config/settings.py configures SQLite; its name."""
    name = str(tmp_path / "writers.sqlite3")
    connections.settings[ALIAS] = {  # the defaults Django filled in for "default", then SQLite's
        **connections.settings["default"], "ENGINE": "config.sqlite3", "NAME": name, "CONN_MAX_AGE": 0,
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": WAIT},
    }
    with django_db_blocker.unblock():
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("CREATE TABLE items (name TEXT)")
        try:
            yield name
        finally:
            connections[ALIAS].close()
            del connections[ALIAS]
            del connections.settings[ALIAS]


def in_thread(work: Callable[[], object], *, busy_timeout: int = 0) -> tuple[threading.Thread, dict]:
    """Run `work` in a thread of its own (its own connection); the thread and its outcome."""
    outcome: dict = {}

    def run() -> None:
        try:
            with connections[ALIAS].cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {busy_timeout}")
            outcome["result"] = work()
        except Exception as error:
            outcome["error"] = error
        finally:
            connections[ALIAS].close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def insert(name: str) -> None:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("INSERT INTO items (name) VALUES (%s)", [name])


def names() -> list[str]:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT name FROM items ORDER BY rowid")
        return [row[0] for row in cursor.fetchall()]


class WatchedLock:
    """The writer lock, telling when a thread has started waiting for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(blocking=False):
            return True
        self.waiting.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return self.lock.locked()


@pytest.fixture
def watched(database, monkeypatch):
    from config.sqlite3 import base

    lock = WatchedLock()
    monkeypatch.setitem(base._locks, database, lock)
    return lock


def test_a_transaction_holds_the_writer_lock_until_it_commits(database):
    with transaction.atomic(using=ALIAS):
        insert("a")
        assert writer_lock(database).locked()
    assert not writer_lock(database).locked()
    assert names() == ["a"]


def test_a_transaction_that_rolls_back_releases_the_writer_lock(database):
    with pytest.raises(RuntimeError), transaction.atomic(using=ALIAS):
        insert("a")
        raise RuntimeError("the transaction's work failed")
    assert not writer_lock(database).locked()
    assert names() == []


def test_a_writer_waits_for_the_transaction_before_it_instead_of_failing(database, watched):
    def second() -> None:
        with transaction.atomic(using=ALIAS):
            insert("b")

    with transaction.atomic(using=ALIAS):
        insert("a")
        thread, outcome = in_thread(second)  # SQLite's busy timeout 0: no retry of its own
        assert watched.waiting.wait(WAIT), "the second writer never waited for the first"
    thread.join(WAIT)
    assert outcome == {"result": None}
    assert names() == ["a", "b"]
    assert not watched.locked()


def test_a_write_outside_a_transaction_waits_for_the_lock_and_holds_it_only_while_it_runs(database, watched):
    watched.acquire()  # a transaction of this process is writing
    thread, outcome = in_thread(lambda: insert("b"))
    assert watched.waiting.wait(WAIT), "the write did not wait for the writer lock"
    assert thread.is_alive()
    watched.release()
    thread.join(WAIT)
    assert outcome == {"result": None}
    assert not watched.locked()
    assert names() == ["b"]


def test_a_read_never_waits_for_the_writer_lock(database):
    insert("a")
    writer_lock(database).acquire()
    try:
        thread, outcome = in_thread(names)
        thread.join(WAIT)
        assert outcome == {"result": ["a"]}
    finally:
        writer_lock(database).release()


def test_a_writer_that_waits_longer_than_the_timeout_fails_as_sqlite_does(database):
    writer_lock(database).acquire()
    try:
        def impatient() -> None:
            connection = connections[ALIAS]
            connection.settings_dict = {**connection.settings_dict,
                                        "OPTIONS": {**connection.settings_dict["OPTIONS"], "timeout": 0.05}}
            with transaction.atomic(using=ALIAS):
                insert("b")

        thread, outcome = in_thread(impatient)
        thread.join(WAIT)
        assert isinstance(outcome.get("error"), OperationalError)
        assert "database is locked" in str(outcome["error"])
    finally:
        writer_lock(database).release()
    assert names() == []


def test_a_connection_closed_in_a_transaction_releases_the_writer_lock(database):
    with transaction.atomic(using=ALIAS):
        insert("a")
        assert writer_lock(database).locked()
        connections[ALIAS].close()  # e.g. a broken connection, dropped mid-way
        assert not writer_lock(database).locked()
    assert names() == []  # the transaction went with its connection


def test_sqlite_databases_use_the_queued_backend(tmp_path):
    code = ("import django; django.setup(); from django.conf import settings as s; from django.db import connection; "
            "print(s.DATABASES['default']['ENGINE'], connection.vendor)")
    result = run_django(tmp_path, ["-c", code])
    assert result.stdout.split() == ["config.sqlite3", "sqlite"], result.stderr
    assert (REPO / "config" / "sqlite3" / "base.py").exists()
