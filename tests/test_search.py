"""Full-text search (chat/search.py), through the socket and directly.

Runs on the database DATABASE_URL selects: SQLite (FTS5) by default, PostgreSQL
(tsvector + GIN) with DATABASE_URL=postgres://... . A PostgreSQL that cannot be
reached makes every test here error out (the test database cannot be created);
nothing is skipped.
"""
from __future__ import annotations

import os

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from chat import conversations, search
from chat.models import SearchEntry
from chat.protocol import MAX_QUERY_CHARS
from tests.conftest import ECHO_MODEL
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


# --- Helpers ---------------------------------------------------------------------------


def make_conversation(user, first: str, reply: str | None = None, title: str | None = None):
    """A conversation made through chat.conversations (no model): (row, [message ids])."""
    row, _, message = conversations.create_conversation(user, ECHO_MODEL, first)
    ids = [message.id]
    if reply is not None:
        _, answer = conversations.append_message(row, message.id, "assistant", reply, model=ECHO_MODEL, status="complete")
        ids.append(answer.id)
    if title is not None:
        conversations.rename(user, row.id, title)
    return row, ids


def found(user, query: str) -> list[tuple[str, str | None]]:
    return [(r["conversation"]["id"], r["message"]) for r in search.search(user, query)]


async def ask(socket: ChatSocket, query: str) -> dict:
    ref = await socket.send("conversation.search", query=query)
    return await socket.receive("search.results", ref=ref)


def fts_rows(word: str) -> int:
    """What the full-text index itself (not the SearchEntry table) holds for a word."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM chat_searchentry_fts WHERE chat_searchentry_fts MATCH %s", [f'"{word}"'])
        else:
            cursor.execute("SELECT count(*) FROM chat_searchentry WHERE search_vector @@ plainto_tsquery('simple', %s)", [word])
        return cursor.fetchone()[0]


# --- The database in use -----------------------------------------------------------------


def test_runs_on_the_database_that_database_url_names(db):
    url = os.environ.get("DATABASE_URL", "")
    expected = "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
    assert connection.vendor == expected
    with connection.cursor() as cursor:
        if expected == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE name = 'chat_searchentry_fts'")
            assert cursor.fetchone() is not None, "the FTS5 table is missing"
        else:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'chat_searchentry_vector'")
            (definition,) = cursor.fetchone()
            assert "gin" in definition.lower() and "search_vector" in definition


# --- Directly: chat/search.py ------------------------------------------------------------


def test_finds_message_words_and_title_words_and_points_at_the_message(make_user):
    alice = make_user("alice")
    row, (question, answer) = make_conversation(alice, "What colour is a ripe banana?", "A ripe banana is yellow.",
                                                title="Fruit questions")
    results = search.search(alice, "yellow")
    assert [(r["conversation"]["id"], r["message"]) for r in results] == [(row.id, answer)]
    assert results[0]["conversation"]["title"] == "Fruit questions"
    assert set(results[0]["conversation"]) >= {"id", "title", "model", "system_prompt", "shared", "created_at", "updated_at"}
    assert "yellow" in results[0]["snippet"]
    assert found(alice, "colour") == [(row.id, question)]
    # Only the title has this word: the message is None and the snippet is the title.
    assert search.search(alice, "fruit") == [{"conversation": results[0]["conversation"], "message": None,
                                              "snippet": "Fruit questions"}]
    assert found(alice, "FRUIT Questions") == [(row.id, None)]  # case-insensitive, every word


def test_every_word_must_match(make_user):
    alice = make_user("alice")
    both, _ = make_conversation(alice, "apples and pears")
    make_conversation(alice, "apples only")
    assert found(alice, "pears apples") == [(both.id, found(alice, "pears")[0][1])]
    assert found(alice, "apples kumquat") == []


def test_newest_conversation_first_and_a_new_message_moves_it_up(make_user):
    alice = make_user("alice")
    old, _ = make_conversation(alice, "mango smoothie recipe")
    new, _ = make_conversation(alice, "mango chutney recipe")
    assert [cid for cid, _ in found(alice, "mango")] == [new.id, old.id]
    _, message = conversations.append_message(old, None, "user", "more mango please")
    assert found(alice, "mango") == [(old.id, message.id), (new.id, found(alice, "chutney")[0][1])]


def test_one_result_per_conversation_the_newest_matching_message(make_user):
    alice = make_user("alice")
    row, (first, second) = make_conversation(alice, "papaya one", "papaya two")
    assert found(alice, "papaya") == [(row.id, second)]


def test_never_another_users_conversations(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    mine, _ = make_conversation(alice, "secret walnut plan", title="Walnut")
    make_conversation(bob, "bob's walnut plan, walnut walnut", "walnut!", title="Walnut walnut")
    assert [cid for cid, _ in found(alice, "walnut")] == [mine.id]
    assert [cid for cid, _ in found(bob, "secret")] == []


def test_the_index_follows_every_write(make_user):
    alice = make_user("alice")
    row, (first,) = make_conversation(alice, "durian")
    assert fts_rows("durian") == 1
    conversations.rename(alice, row.id, "Lychee talk")
    conversations.rename(alice, row.id, "Rambutan talk")
    assert found(alice, "lychee") == [] and found(alice, "rambutan") == [(row.id, None)]
    assert SearchEntry.objects.filter(conversation=row).count() == 2  # the message and the title, once each
    conversations.delete(alice, row.id)
    assert found(alice, "durian") == [] and found(alice, "rambutan") == []
    assert SearchEntry.objects.count() == 0
    assert fts_rows("durian") == 0 and fts_rows("rambutan") == 0


def test_a_write_indexes_only_what_it_changed(make_user):
    alice = make_user("alice")
    row, ids = make_conversation(alice, "quince " * 3)
    for i in range(30):
        _, message = conversations.append_message(row, ids[-1], "user", f"message number {i}")
        ids.append(message.id)
    before = {e.pk: e.message_id for e in SearchEntry.objects.filter(conversation=row)}
    _, message = conversations.append_message(row, ids[-1], "assistant", "a quince reply", model=ECHO_MODEL, status="complete")
    after = {e.pk: e.message_id for e in SearchEntry.objects.filter(conversation=row)}
    assert set(after) - set(before) and set(before) <= set(after)  # the old entries were left alone
    assert set(after.values()) - set(before.values()) == {message.id}


def test_empty_replies_are_not_indexed_and_partial_replies_are(make_user):
    alice = make_user("alice")
    row, (first,) = make_conversation(alice, "fig")
    conversations.append_message(row, first, "assistant", "", model=ECHO_MODEL, status="interrupted")
    _, partial = conversations.append_message(row, first, "assistant", "half a persimmon", model=ECHO_MODEL, status="stopped")
    assert SearchEntry.objects.filter(conversation=row).count() == 2
    assert found(alice, "persimmon") == [(row.id, partial.id)]


def test_sync_from_store_rebuilds_the_index(make_user):
    alice = make_user("alice")
    row, (first, answer) = make_conversation(alice, "guava question", "guava answer", title="Guava")
    SearchEntry.objects.all().delete()
    assert found(alice, "guava") == []
    assert conversations.sync_from_store() == 1
    assert found(alice, "answer") == [(row.id, answer)] and found(alice, "question") == [(row.id, first)]
    assert found(alice, "guava") == [(row.id, answer)]
    conversations.sync_from_store()  # idempotent
    assert SearchEntry.objects.filter(conversation=row).count() == 3


@pytest.mark.parametrize("query", [
    '"', '""', '"tamarind', 'tamarind"', "tamarind*", "*", "NEAR", "NEAR(tamarind pod)", "tamarind NEAR pod",
    "-tamarind", "tamarind -pod", "(", "(tamarind", "tamarind)", "tamarind OR pod", "tamarind AND", "NOT tamarind",
    "text:tamarind", "^tamarind", "tamarind:*", "tamarind & pod | !x", "'; DROP TABLE chat_searchentry; --",
    "{tamarind}", "\\", "%", "_", "tamarind\x00pod",
])
def test_query_syntax_is_only_text(make_user, query):
    alice = make_user("alice")
    row, _ = make_conversation(alice, "a tamarind pod is near the mortar")
    results = search.search(alice, query)
    words = search.query_words(query)
    if not words:
        assert results == []
    elif set(words) <= {"tamarind", "pod", "near"}:
        assert [r["conversation"]["id"] for r in results] == [row.id]
    assert SearchEntry.objects.count() == 1  # still there


def test_operators_are_words(make_user):
    alice = make_user("alice")
    row, _ = make_conversation(alice, "the shop is near the station, not far")
    make_conversation(alice, "the station is closed")
    assert [r["conversation"]["id"] for r in search.search(alice, "NEAR")] == [row.id]
    assert [r["conversation"]["id"] for r in search.search(alice, "NOT station")] == [row.id]
    assert len(search.search(alice, "-station")) == 2  # not a negation


def test_only_punctuation_or_nothing_finds_nothing(make_user):
    alice = make_user("alice")
    make_conversation(alice, "anything at all ...")
    for query in ["", "   ", "...", "*()-\"", "!!!"]:
        assert search.search(alice, query) == []


def test_snippet_is_plain_text_around_the_first_match(make_user):
    alice = make_user("alice")
    filler = " ".join(f"word{i}" for i in range(200))
    text = f"{filler} <b>the <script>x</script> & clementine</b> {filler}"
    row, (first,) = make_conversation(alice, text)
    (result,) = search.search(alice, "clementine")
    snippet = result["snippet"]
    assert "clementine" in snippet and "<script>x</script> &" in snippet  # the text as written, not HTML
    assert "&amp;" not in snippet and "<mark>" not in snippet
    assert len(snippet) <= search.SNIPPET_CHARS + 2
    assert snippet.startswith("…") and snippet.endswith("…")
    short, _ = make_conversation(alice, "a   short\n\nkiwi   note")
    assert search.search(alice, "kiwi")[0]["snippet"] == "a short kiwi note"


def test_snippet_function():
    assert search.snippet("kiwi", ["kiwi"]) == "kiwi"
    long = "start " + "x" * 300 + " kiwi end"
    piece = search.snippet(long, ["kiwi"])
    assert piece.endswith("kiwi end") and len(piece) <= search.SNIPPET_CHARS + 2
    assert search.snippet("a" * 500, ["zzz"]).startswith("a" * 10)  # no match: the start
    assert search.snippet("kiwis and kiwi", ["kiwi"]) == "kiwis and kiwi"


def test_limit(make_user):
    alice = make_user("alice")
    for i in range(25):
        make_conversation(alice, f"olive number {i}")
    assert len(search.search(alice, "olive")) == 20
    assert len(search.search(alice, "olive", limit=5)) == 5


@pytest.mark.parametrize("dense, walk", [(1, 2), (1, 4), (1, 100), (3, 1)])
def test_the_dense_word_plan_finds_the_same_as_the_index_plan(make_user, monkeypatch, dense, walk):
    """Words matching a lot walk the newest conversations first (chat/search.py): same answers."""
    alice, bob = make_user("alice"), make_user("bob")
    rows = []
    for i in range(8):
        text = f"lemon number {i}" if i in (0, 1, 2, 5) else f"lime number {i}"
        rows.append(make_conversation(alice, text, f"reply {i} lemon" if i == 1 else None, title=f"Citrus {i}")[0])
        make_conversation(bob, "lemon lemon lime")
    queries = ["lemon", "lime", "number", "citrus", "lemon number", "reply lemon", "kumquat"]
    vendor = connection.vendor
    monkeypatch.setitem(search.SETTINGS, vendor, {"dense": 10**9, "walk": 1})
    expected = {(q, limit): search.search(alice, q, limit=limit) for q in queries for limit in (1, 2, 3, 20)}
    assert [r["conversation"]["id"] for r in expected["lemon", 20]] == [rows[i].id for i in (5, 2, 1, 0)]
    monkeypatch.setitem(search.SETTINGS, vendor, {"dense": dense, "walk": walk})
    for (q, limit), results in expected.items():
        assert search.search(alice, q, limit=limit) == results, (q, limit)


# --- Through the socket --------------------------------------------------------------------


async def new_conversation(socket: ChatSocket, content: str) -> tuple[str, str, str]:
    """Send a first message; wait for the reply and the title. (conversation, message, reply) ids."""
    await socket.send("message.send", conversation=None, content=content)
    created = await socket.receive("conversation.created")
    message = await socket.receive("message.created")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    await socket.receive("conversation.updated")  # the title
    return created["conversation"]["id"], message["message"]["id"], final["message"]["id"]


async def test_search_over_the_socket(make_user):
    alice, bob = await create_user("alice"), await create_user("bob")
    socket, bobs = await ChatSocket.connect(alice), await ChatSocket.connect(bob)
    bobs_own, _, _ = await new_conversation(bobs, "my nectarine secret")
    first, first_message, first_reply = await new_conversation(socket, "nectarine jam")
    second, second_message, second_reply = await new_conversation(socket, "nectarine pie")

    answer = await ask(socket, "nectarine")
    assert answer["query"] == "nectarine"
    # The echo model's reply repeats the words: the reply is the newest matching message.
    assert [(r["conversation"]["id"], r["message"]) for r in answer["results"]] == [(second, second_reply), (first, first_reply)]
    assert answer["results"][0]["conversation"]["title"] == "nectarine pie chat"
    assert all("nectarine" in r["snippet"] for r in answer["results"])

    titled = await ask(socket, "chat")  # only in the titles ("... chat")
    assert [(r["conversation"]["id"], r["message"]) for r in titled["results"]] == [(second, None), (first, None)]

    # A new message in the older conversation: found, and that conversation comes first.
    await socket.send("message.send", conversation=first, content="add some cardamom")
    await socket.receive("message.created")
    await socket.reply_text()
    answer = await ask(socket, "cardamom")
    assert [r["conversation"]["id"] for r in answer["results"]] == [first]
    assert [r["conversation"]["id"] for r in (await ask(socket, "nectarine"))["results"]] == [first, second]

    assert [r["conversation"]["id"] for r in (await ask(bobs, "nectarine"))["results"]] == [bobs_own]
    assert (await ask(bobs, "jam"))["results"] == []
    await socket.close()
    await bobs.close()


async def test_a_stopped_reply_is_searchable(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    await socket.send("message.send", conversation=None, content="count for me #tokens=400 #delay=0.02")
    conversation = (await socket.receive("conversation.created"))["conversation"]["id"]
    for _ in range(3):
        await socket.receive("reply.delta")
    await socket.send("generation.stop", conversation=conversation)
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and final["stopped"] is True
    stored = final["message"]["content"]
    assert stored.startswith("w0 w1") and "w399" not in stored
    answer = await ask(socket, "w1")
    assert [(r["conversation"]["id"], r["message"]) for r in answer["results"]] == [(conversation, final["message"]["id"])]
    assert (await ask(socket, "w399"))["results"] == []
    await socket.close()


async def test_deleting_a_conversation_removes_it_from_results(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    kept, _, _ = await new_conversation(socket, "pomelo salad")
    gone, _, _ = await new_conversation(socket, "pomelo juice")
    assert len((await ask(socket, "pomelo"))["results"]) == 2
    ref = await socket.send("conversation.delete", conversation=gone)
    await socket.receive("conversation.deleted", ref=ref)
    assert [r["conversation"]["id"] for r in (await ask(socket, "pomelo"))["results"]] == [kept]
    assert (await ask(socket, "juice"))["results"] == []
    assert await sync_to_async(SearchEntry.objects.filter(conversation_id=gone).count)() == 0
    await socket.close()


async def test_syntax_characters_and_limits_over_the_socket(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    conversation, _, _ = await new_conversation(socket, "starfruit near the window")
    for query in ['"', '"starfruit', "starfruit*", "NEAR(starfruit window)", "-starfruit", "(", "*", "'", ""]:
        answer = await ask(socket, query)
        assert isinstance(answer["results"], list)
        if search.query_words(query):
            assert [r["conversation"]["id"] for r in answer["results"]] == [conversation], query
        else:
            assert answer["results"] == [], query
    ref = await socket.send("conversation.search", query="x" * (MAX_QUERY_CHARS + 1))
    error = await socket.receive("error", ref=ref)
    assert error["code"] == "too_large"
    exact = await ask(socket, "starfruit " + "y" * (MAX_QUERY_CHARS - 10))
    assert exact["results"] == []
    ref = await socket.send("conversation.search", query=5)
    assert (await socket.receive("error", ref=ref))["code"] == "invalid_message"
    await socket.close()


def test_text_with_nul_is_indexed(make_user):
    alice = make_user("alice")
    row, (first,) = make_conversation(alice, "nul\x00separated lime")
    assert found(alice, "lime") == [(row.id, first)]
    assert found(alice, "separated\x00lime") == [(row.id, first)]
