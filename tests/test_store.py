"""The conversation store: one contract, run against the local folder and S3 (moto).

Both stores pass the same tests so they cannot drift; the backend-specific tests
below them cover what only one of them can get wrong (keys, conditional writes,
network and credential failures; path escapes and half-written files).
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from moto.s3.responses import S3Response

from chat.store import (
    ConversationExists,
    ConversationNotFound,
    LocalFolderStore,
    S3Store,
    StorageUnavailable,
    WriteConflict,
    conversation_key,
    get_store,
    parse_conversation_key,
    reset_store,
)
from chat.store import local as local_store
from chat.transcript import Transcript

BUCKET = "chat-transcripts"


@pytest.fixture
def aws(monkeypatch):
    """An in-process S3 (moto) with one bucket, and fake credentials so nothing leaves."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    # In-process moto is not safe for concurrent requests on one object: PutObject checks
    # If-Match and stores in two steps (two writers can both pass), and a GET can read an
    # object whose buffer a concurrent PUT is closing ("I/O operation on closed file").
    # Real S3 answers each request atomically; one lock around moto's object requests does too.
    moto_lock = threading.Lock()
    original = S3Response.key_response

    def atomic_key_response(self, *args, **kwargs):
        with moto_lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "key_response", atomic_key_response)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def make_s3(prefix: str = "", **kwargs) -> S3Store:
    return S3Store(BUCKET, prefix=prefix, region_name="us-east-1", **kwargs)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalFolderStore(tmp_path / "data")
    request.getfixturevalue("aws")
    return make_s3(prefix="tenant-a/")


def new(store, user_id: int = 1, conversation_id: str = "c1", system_prompt: str = "") -> Transcript:
    transcript = Transcript.new(conversation_id, user_id, "m", system_prompt=system_prompt, title="t")
    store.create(transcript)
    return transcript


def append(text: str, role: str = "user"):
    """A mutate that adds a message at the end of the active branch."""
    return lambda t: t.add_message(t.active_leaf, role, text).id


# --- the contract, for both stores --------------------------------------------
def test_create_load_update_delete_iter_ids(store):
    created = new(store, 1, "c1", system_prompt="Be brief.")
    new(store, 1, "c2")
    new(store, 22, "c1")  # the same id under another user is another conversation
    assert store.load(1, "c1") == created
    transcript, message_id = store.update(1, "c1", append("héllo ✓"))
    assert transcript.active_leaf == message_id
    assert store.load(1, "c1") == transcript
    assert store.load(22, "c1").messages == {}
    assert sorted(store.iter_ids()) == [(1, "c1"), (1, "c2"), (22, "c1")]
    store.delete(1, "c1")
    with pytest.raises(ConversationNotFound):
        store.load(1, "c1")
    store.delete(1, "c1")  # deleting twice is not an error
    store.delete(5, "never")
    assert sorted(store.iter_ids()) == [(1, "c2"), (22, "c1")]
    new(store, 1, "c1")  # the id is free again
    assert store.load(1, "c1").messages == {}


def test_delete_user_removes_every_transcript_of_that_user_only(store):
    for conversation_id in ("c1", "c2"):
        new(store, 1, conversation_id)
    new(store, 11, "c1")  # a user id that starts like the other: not under its prefix
    new(store, 2, "c1")
    assert sorted(store.iter_ids(1)) == [(1, "c1"), (1, "c2")]
    assert store.delete_user(1) == 2
    assert sorted(store.iter_ids()) == [(2, "c1"), (11, "c1")]
    assert store.delete_user(1) == 0  # nothing left: not an error
    assert store.load(11, "c1").user_id == 11


def test_create_twice_is_refused_and_keeps_the_first(store):
    new(store)
    store.update(1, "c1", append("first"))
    with pytest.raises(ConversationExists):
        store.create(Transcript.new("c1", 1, "other"))
    assert [m.content for m in store.load(1, "c1").active_branch()] == ["first"]


def test_missing_conversation_is_not_found(store):
    new(store, 1, "c1")
    for user_id, conversation_id in [(1, "nope"), (2, "c1"), (1, "../c1"), (1, "c1.json"), (1, "")]:
        with pytest.raises(ConversationNotFound):
            store.load(user_id, conversation_id)
        with pytest.raises(ConversationNotFound):
            store.update(user_id, conversation_id, append("x"))
    assert sorted(store.iter_ids()) == [(1, "c1")]  # a failed update creates nothing


def test_update_of_a_tree_round_trips(store):
    new(store, system_prompt="sys")
    _, u1 = store.update(1, "c1", append("q1"))
    _, a1 = store.update(1, "c1", append("a1", "assistant"))
    _, a1b = store.update(1, "c1", lambda t: t.add_message(u1, "assistant", "a1b", status="failed",
                                                            error={"code": "model_failed", "message": "cut"}).id)
    _, e1 = store.update(1, "c1", lambda t: t.add_message(None, "user", "q1 edited").id)
    transcript, leaf = store.update(1, "c1", lambda t: t.switch_branch(u1))
    assert leaf == a1b
    loaded = store.load(1, "c1")
    assert loaded == transcript
    assert list(loaded.messages) == [u1, a1, a1b, e1]
    assert loaded.siblings(a1) == [a1, a1b] and loaded.siblings(e1) == [u1, e1]
    assert loaded.messages[a1b].error == {"code": "model_failed", "message": "cut"}
    assert [m.id for m in loaded.active_branch()] == [u1, a1b]


def test_a_mutate_that_raises_writes_nothing(store):
    new(store)
    store.update(1, "c1", append("kept"))
    before = store.load(1, "c1")

    def bad(t: Transcript):
        t.add_message(t.active_leaf, "user", "lost")
        raise LookupError("refused")

    with pytest.raises(LookupError):
        store.update(1, "c1", bad)
    assert store.load(1, "c1") == before
    store.update(1, "c1", append("after"))  # and the conversation is not left locked


def race(stores, user_id: int, conversation_id: str, threads: int = 8, each: int = 10) -> None:
    """`threads` writers, each appending `each` messages to one conversation.

    Eight writers with no pause between writes is far beyond the contention a chat sees,
    and optimistic writes let a loser starve for a while (up to 9 attempts seen here), so
    the bound is raised: this checks that no write is lost; WriteConflict is tested apart.
    """
    for s in stores:
        s.max_attempts = 30
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(each):
                stores[n % len(stores)].update(user_id, conversation_id, append(f"{n}:{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


def assert_all_landed(transcript: Transcript, threads: int = 8, each: int = 10) -> None:
    texts = [m.content for m in transcript.active_branch()]  # every append went to the end
    assert len(texts) == len(transcript.messages) == threads * each
    for n in range(threads):
        assert [t for t in texts if t.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(each)]


def test_racing_writers_all_land(store):
    new(store)
    race([store], 1, "c1")
    assert_all_landed(store.load(1, "c1"))
    if isinstance(store, LocalFolderStore):
        assert store.conflicts == 0  # the lock serialises; nothing to retry


def test_calls_per_update_do_not_grow(store):
    new(store)

    def cost() -> int:
        before = store.calls
        store.update(1, "c1", append("x"))
        return store.calls - before

    first = cost()
    for i in range(60):
        store.update(1, "c1", append(f"m{i}"))
    for i in range(30):
        new(store, 1 + i % 3, f"other{i}")
    assert first == cost() == 2  # one read, one write, whatever the size or the neighbours
    before = store.calls
    store.load(1, "c1")
    assert store.calls - before == 1


def test_a_corrupt_transcript_is_reported(store, tmp_path):
    new(store)
    garbage = b'{"version": 99}'
    if isinstance(store, LocalFolderStore):
        (store.root / conversation_key("", 1, "c1")).write_bytes(garbage)
    else:
        store.client.put_object(Bucket=BUCKET, Key=conversation_key(store.prefix, 1, "c1"), Body=garbage)
    with pytest.raises(StorageUnavailable, match="unreadable"):
        store.load(1, "c1")


# --- keys -----------------------------------------------------------------------
def test_key_helpers_round_trip_and_reject_foreign_keys():
    key = conversation_key("app/", 42, "Ab_9-z")
    assert key == "app/conversations/42/Ab_9-z.json"
    assert parse_conversation_key("app/", key) == (42, "Ab_9-z")
    assert parse_conversation_key("", "conversations/0/x.json") == (0, "x")
    for foreign in ["other/conversations/42/x.json", "app/conversations/42/x.txt", "app/conversations/x.json",
                    "app/conversations/42/a/b.json", "app/conversations/-1/x.json", "app/conversations/042/x.json",
                    "app/conversations/42/.json", "app/conversations/42/../x.json", "app/conversations/ 4/x.json",
                    "app/conversations/42/x.lock", "app/conversations/42/" + "a" * 65 + ".json"]:
        with pytest.raises(ValueError):
            parse_conversation_key("app/", foreign)
    for user_id, conversation_id in [(1, "../x"), (1, "a/b"), (1, ""), (1, "a" * 65), (1, "x.json"),
                                     (-1, "x"), (True, "x"), ("1", "x"), (1, "é")]:
        with pytest.raises(ValueError):
            conversation_key("app/", user_id, conversation_id)


# --- S3 only ----------------------------------------------------------------------
def precondition_failed() -> ClientError:
    return ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions "
                        "you specified did not hold"}, "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject")


class FlakyClient:
    """A real (moto) client whose next `fail` conditional updates answer 412.

    With `land=True` the write is stored first: the response was lost and the HTTP
    layer's retry was refused, because the object has changed (by us).
    """

    def __init__(self, client, fail: int, land: bool = False) -> None:
        self._client, self.fail, self.land, self.puts = client, fail, land, 0

    def put_object(self, **kwargs):
        self.puts += 1
        if "IfMatch" in kwargs and self.fail > 0:
            self.fail -= 1
            if self.land:
                self._client.put_object(**kwargs)
            raise precondition_failed()
        return self._client.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_s3_objects_live_under_the_prefix(aws):
    s3 = make_s3(prefix="tenant-a")  # a missing slash is added
    new(s3, 3, "abc")
    client = boto3.client("s3", region_name="us-east-1")
    client.put_object(Bucket=BUCKET, Key="tenant-a/conversations/3/notes.txt", Body=b"x")
    client.put_object(Bucket=BUCKET, Key="tenant-b/conversations/3/other.json", Body=b"x")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert "tenant-a/conversations/3/abc.json" in keys
    assert list(s3.iter_ids()) == [(3, "abc")]
    body = client.get_object(Bucket=BUCKET, Key="tenant-a/conversations/3/abc.json")["Body"].read()
    assert b": " not in body and b", " not in body  # compact JSON


def test_s3_iter_ids_pages(aws):
    s3 = make_s3()
    for i in range(1005):  # more than one page of 1000
        s3.client.put_object(Bucket=BUCKET, Key=conversation_key("", i % 7, f"c{i}"), Body=b"{}")
    before = s3.calls
    assert len(set(s3.iter_ids())) == 1005
    assert s3.calls - before == 2


def test_s3_conflict_rereads_and_reapplies(aws):
    s3 = make_s3()
    new(s3)
    _ = s3.client  # create the real client, then wrap it
    s3._client = flaky = FlakyClient(s3._client, fail=1)
    seen: list[int] = []

    def mutate(t: Transcript) -> str:
        seen.append(len(t.messages))
        return t.add_message(t.active_leaf, "user", "once").id

    before = s3.calls
    transcript, message_id = s3.update(1, "c1", mutate)
    assert seen == [0, 0] and flaky.puts == 2 and s3.conflicts == 1
    assert s3.calls - before == 4  # GET, PUT (412), GET, PUT
    assert [m.content for m in s3.load(1, "c1").active_branch()] == ["once"]


def test_s3_real_interleaved_writer_is_not_overwritten(aws):
    """Another process writes between our read and our write: moto's own If-Match refuses us."""
    ours, theirs = make_s3(), make_s3()
    new(ours)
    calls = 0

    def mutate(t: Transcript) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            theirs.update(1, "c1", append("theirs"))
        t.add_message(t.active_leaf, "user", "ours")

    ours.update(1, "c1", mutate)
    assert calls == 2 and ours.conflicts == 1
    assert [m.content for m in ours.load(1, "c1").active_branch()] == ["theirs", "ours"]


def test_s3_own_write_that_landed_is_not_applied_twice(aws):
    s3 = make_s3()
    new(s3)
    _ = s3.client  # create the real client, then wrap it
    s3._client = FlakyClient(s3._client, fail=1, land=True)
    transcript, _ = s3.update(1, "c1", append("once"))
    assert [m.content for m in s3.load(1, "c1").active_branch()] == ["once"]
    assert transcript == s3.load(1, "c1")


def test_s3_create_whose_response_was_lost_still_succeeds(aws):
    s3 = make_s3()
    real = s3.client

    class LostResponse:
        def put_object(self, **kwargs):
            real.put_object(**kwargs)
            raise precondition_failed()

        def __getattr__(self, name):
            return getattr(real, name)

    s3._client = LostResponse()
    new(s3)
    assert s3.load(1, "c1").id == "c1"
    with pytest.raises(ConversationExists):  # while a real duplicate is still refused
        s3.create(Transcript.new("c1", 1, "m"))


def test_s3_retries_exhausted_is_write_conflict(aws):
    s3 = make_s3()
    new(s3)
    _ = s3.client  # create the real client, then wrap it
    s3._client = flaky = FlakyClient(s3._client, fail=1000)
    s3.max_attempts, s3.backoff_base = 4, 0.001
    with pytest.raises(WriteConflict, match="too many writers") as info:
        s3.update(1, "c1", append("never"))
    assert isinstance(info.value, StorageUnavailable)
    assert flaky.puts == 4 and s3.conflicts == 3
    assert s3.load(1, "c1").messages == {}


def test_s3_two_stores_racing_both_land(aws):
    """Two stores with their own clients stand in for two server processes."""
    first, second = make_s3(), make_s3()
    new(first)
    race([first, second], 1, "c1")
    assert_all_landed(second.load(1, "c1"))
    print(f"conflicts retried: {first.conflicts + second.conflicts}")


def test_s3_missing_bucket_is_unavailable(aws):
    s3 = S3Store("no-such-bucket", region_name="us-east-1")
    operations = [lambda: s3.create(Transcript.new("c1", 1, "m")), lambda: s3.load(1, "c1"),
                  lambda: s3.update(1, "c1", append("x")), lambda: list(s3.iter_ids())]
    for operation in operations:
        with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket' does not exist") as info:
            operation()
        assert isinstance(info.value.__cause__, ClientError)


def test_s3_bad_credentials_are_unavailable(aws):
    s3 = make_s3()

    @set_initial_no_auth_action_count(0)  # moto checks access keys from here on: "testing" is unknown
    def attempt():
        with pytest.raises(StorageUnavailable, match="credentials were rejected"):
            s3.load(1, "c1")
        with pytest.raises(StorageUnavailable, match="credentials were rejected"):
            s3.create(Transcript.new("c1", 1, "m"))

    attempt()


def test_s3_unreachable_endpoint_fails_fast(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    s3 = S3Store(BUCKET, endpoint_url="http://127.0.0.1:9", region_name="us-east-1")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="cannot reach the storage service at http://127.0.0.1:9"):
        s3.load(1, "c1")
    with pytest.raises(StorageUnavailable):
        list(s3.iter_ids())
    assert time.monotonic() - started < 10


# --- local folder only ------------------------------------------------------------
def test_local_crafted_ids_never_leave_the_folder(tmp_path):
    local = LocalFolderStore(tmp_path / "data")
    new(local)
    for crafted in ["../x", "..", "a/b", "/etc/passwd", "c1/../../x", "x\x00"]:
        with pytest.raises(ValueError):
            local.create(Transcript.new(crafted, 1, "m"))
        with pytest.raises(ConversationNotFound):
            local.load(1, crafted)
        with pytest.raises(ConversationNotFound):
            local.update(1, crafted, append("x"))
        local.delete(1, crafted)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    # Nothing escaped, and no stray lock or temp file was left for the crafted names.
    assert files == ["data/conversations/1/c1.json"]


def test_local_failed_write_leaves_the_old_transcript_whole(tmp_path, monkeypatch):
    local = LocalFolderStore(tmp_path)
    new(local)
    local.update(1, "c1", append("safe"))
    path = tmp_path / "conversations" / "1" / "c1.json"
    before = path.read_bytes()

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(local_store.os, "replace", disk_full)
    with pytest.raises(StorageUnavailable, match="No space left") as info:
        local.update(1, "c1", append("lost"))
    assert isinstance(info.value.__cause__, OSError)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["c1.json", "c1.lock"]  # the temp file is gone


def test_local_unusable_root_is_unavailable(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the folder should be")
    local = LocalFolderStore(root)
    with pytest.raises(StorageUnavailable):
        local.create(Transcript.new("c1", 1, "m"))
    with pytest.raises(StorageUnavailable):
        local.load(1, "c1")
    with pytest.raises(StorageUnavailable):
        list(local.iter_ids())


def _append_in_process(root: str, n: int) -> None:
    local = LocalFolderStore(root)
    for i in range(10):
        local.update(1, "c1", append(f"{n}:{i}"))


def test_local_lock_holds_across_processes(tmp_path):
    local = LocalFolderStore(tmp_path)
    new(local)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_in_process, args=(str(tmp_path), n)) for n in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    assert_all_landed(local.load(1, "c1"), threads=4)


# --- the configured store -----------------------------------------------------------
def test_get_store_follows_settings_and_is_cached(settings, tmp_path, aws):
    reset_store()
    try:
        settings.AWS_STORAGE_BUCKET_NAME = ""
        settings.CHAT_DATA_DIR = tmp_path
        local = get_store()
        assert isinstance(local, LocalFolderStore) and local.root == tmp_path
        assert get_store() is local
        reset_store()
        settings.AWS_STORAGE_BUCKET_NAME = BUCKET
        settings.AWS_S3_KEY_PREFIX = "p/"
        settings.AWS_S3_REGION_NAME = "us-east-1"
        settings.AWS_S3_ENDPOINT_URL = None
        s3 = get_store()
        assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == (BUCKET, "p/")
        new(s3)
        assert list(s3.iter_ids()) == [(1, "c1")]
    finally:
        reset_store()
