"""Full-text search over a user's conversations: the index and the query.

Every searchable text is a `SearchEntry` row: one per stored message with text, and
one per titled conversation (`message_id` ""). The full-text index over those rows
is the database's own (created in migration 0002, invisible to the ORM):

- SQLite: the FTS5 table `chat_searchentry_fts` (external content, unicode61
  tokenizer), kept in sync with `chat_searchentry` by triggers;
- PostgreSQL: the stored column `search_vector` = to_tsvector('simple', text) with a
  GIN index.

Both match whole words, case-insensitively, with no stemming and no stop words, and
a query is the AND of its words. User input never reaches either query syntax as
syntax: on SQLite each word is reduced to letters and digits and quoted; on
PostgreSQL the text goes through `plainto_tsquery`, which has no operators.

Writers call `index_messages` / `index_title` (chat/conversations.py does, after
every transcript write), `remove_conversation`, and `rebuild` (the store sync).
Everything here is blocking: callers run it in a thread.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from chat.models import Conversation, SearchEntry
from chat.presenters import conversation_dict
from chat.transcript import Message, Transcript

logger = logging.getLogger(__name__)

TITLE = ""  # the message_id of a conversation's title entry
MAX_TERMS = 16
SNIPPET_CHARS = 160
FTS_TABLE = "chat_searchentry_fts"

# A word as both indexes see one: letters and digits (unicode61 and PostgreSQL's
# parser both split on everything else, underscores included).
_WORD = re.compile(r"[^\W_]+")


# --- Writing the index -----------------------------------------------------------


def _stamp(value: str | None) -> datetime:
    try:
        return datetime.fromisoformat(value) if value else timezone.now()
    except ValueError:
        return timezone.now()


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; a NUL separates words anyway.
    return value.replace("\x00", " ")


def _entry(conversation_id: str, owner_id: int, message: Message) -> SearchEntry:
    return SearchEntry(conversation_id=conversation_id, owner_id=owner_id, message_id=message.id,
                       role=message.role, text=_text(message.content), created_at=_stamp(message.created_at))


def index_messages(conversation_id: str, owner_id: int, messages: Iterable[Message], removed: Iterable[str] = (),
                   *, new: Iterable[str] = ()) -> None:
    """(Re)index these messages of one conversation, and forget the `removed` ids.

    At most two statements whatever the conversation's size: delete the entries of
    the given ids, insert the ones with text (an empty reply, e.g. interrupted before
    its first token, has nothing to find). Ids in `new` were never indexed: a turn's
    user message and its reply are, so most writes are one INSERT.
    """
    messages = list(messages)
    new = set(new)
    ids = [m.id for m in messages if m.id not in new] + list(removed)
    entries = [_entry(conversation_id, owner_id, m) for m in messages if m.content.strip()]
    if not ids and not entries:
        return
    with transaction.atomic():
        if ids:
            SearchEntry.objects.filter(conversation_id=conversation_id, message_id__in=ids).delete()
        SearchEntry.objects.bulk_create(entries)


def index_title(conversation_id: str, owner_id: int, title: str) -> None:
    with transaction.atomic():
        SearchEntry.objects.filter(conversation_id=conversation_id, message_id=TITLE).delete()
        if title.strip():
            SearchEntry.objects.create(conversation_id=conversation_id, owner_id=owner_id, message_id=TITLE,
                                       role="title", text=_text(title), created_at=timezone.now())


def contents(transcript: Transcript) -> dict[str, str]:
    """What `index_changes` compares: each message's text, by id (references, no copies)."""
    return {mid: message.content for mid, message in transcript.messages.items()}


def index_changes(conversation_id: str, owner_id: int, before: dict[str, str], before_title: str,
                  transcript: Transcript) -> None:
    """Index what one transcript write changed: new messages, changed text, removed ones, the title.

    `before` is `contents(transcript)` taken before the write. The comparison is in
    memory (the store has just parsed the whole transcript anyway); only the
    differences reach the database, so its work is O(changed messages).
    """
    after = transcript.messages
    changed = [m for mid, m in after.items() if before.get(mid) != m.content]
    removed = [mid for mid in before if mid not in after]
    try:
        index_messages(conversation_id, owner_id, changed, removed, new=[m.id for m in changed if m.id not in before])
        if transcript.title != before_title:
            index_title(conversation_id, owner_id, transcript.title)
    except Exception:
        # The transcript is stored; a stale index only costs search results, and
        # `manage.py sync_conversations` rebuilds it. Never fail the write for it.
        logger.exception("search index not updated", extra={"conversation": conversation_id})


def remove_conversation(conversation_id: str) -> None:
    SearchEntry.objects.filter(conversation_id=conversation_id).delete()


def rebuild(transcript: Transcript) -> None:
    """Replace every entry of one conversation from its transcript (the store sync)."""
    with transaction.atomic():
        remove_conversation(transcript.id)
        entries = [_entry(transcript.id, transcript.user_id, m) for m in transcript.messages.values() if m.content.strip()]
        if transcript.title.strip():
            entries.append(SearchEntry(conversation_id=transcript.id, owner_id=transcript.user_id, message_id=TITLE,
                                       role="title", text=_text(transcript.title), created_at=_stamp(transcript.created_at)))
        SearchEntry.objects.bulk_create(entries, batch_size=500)


# --- Querying --------------------------------------------------------------------


def query_words(query: str) -> list[str]:
    """The words of a query, lower-cased, at most MAX_TERMS: all the syntax that survives."""
    return [word.lower() for word in _WORD.findall(query)][:MAX_TERMS]


def _fts5_query(words: list[str]) -> str:
    # Each word is letters and digits only, then quoted: "NEAR", "AND", "*", "-" and
    # column filters are all just text to FTS5.
    return " AND ".join(f'"{word}"' for word in words)


# How a search runs. The answer is always the same: the user's matching
# conversations, newest (updated_at) first, each with its newest matching message,
# else its title. The way there depends on how much the words match:
#
# - Most words match few entries: read every match with its conversation, driven by
#   the full-text index, in one query, and pick in Python (cost ~ matches).
# - A word that matches a lot (e.g. "the": there are no stop words) would make that
#   read cost ~ the user's whole history. Its matches are everywhere, though, so walk
#   the user's WALK newest conversations, check each for a match by looking its
#   entries up in the index, and stop at `limit`. Only when the walk does not fill
#   `limit` (many matches, but in old conversations) read the matches after all.
#
# "A lot" is DENSE matching entries. SQLite counts them first, cheaply, in the FTS5
# index alone (of every user: the FTS table has no owner column); PostgreSQL reads at
# most DENSE + 1 of the user's matches and keeps them when that was all. A check in
# the walk costs tens of µs on SQLite (an FTS5 rowid lookup) and a few µs on
# PostgreSQL (the stored tsvector), hence the different settings. See
# bench/search_bench.py for the numbers.
SETTINGS = {"sqlite": {"dense": 10_000, "walk": 40}, "postgresql": {"dense": 2_000, "walk": 300}}


class _Plan:
    """The SQL of one search on this database: the match predicates and their parameter."""

    def __init__(self, query: str, words: list[str], owner_id: int, limit: int):
        self.owner_id, self.limit = owner_id, limit
        self.vendor = connection.vendor
        self.dense, self.walk_size = SETTINGS[self.vendor]["dense"], SETTINGS[self.vendor]["walk"]
        # Times only order rows here: read them as sortable scalars, not datetimes (parsing
        # thousands of timestamps would cost more than the query).
        self.stamp = (lambda column: column) if self.vendor == "sqlite" else (
            lambda column: f"(extract(epoch FROM {column}) * 1000000)::bigint")
        if self.vendor == "sqlite":
            self.param = _fts5_query(words)
            # Every match, driven by the index.
            self.source = f"{FTS_TABLE} f JOIN chat_searchentry e ON e.id = f.rowid"
            self.driven = f"{FTS_TABLE} MATCH %s"
            # One entry, by a rowid lookup in the index: for a few entries only.
            self.entry = (f"EXISTS (SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s "
                          f"AND {FTS_TABLE}.rowid = e.id)")
        else:  # postgresql: the stored tsvector with its GIN index
            self.param = " ".join(_text(query).split())
            self.source = "chat_searchentry e"
            self.driven = "e.search_vector @@ plainto_tsquery('simple'::regconfig, %s)"
            # The same test on rows already found by conversation, kept away from the GIN
            # index (coalesce): otherwise the planner ANDs every match of the word into
            # each conversation's lookup.
            self.entry = "coalesce(e.search_vector, ''::tsvector) @@ plainto_tsquery('simple'::regconfig, %s)"

    def matches(self, cursor, cap: int | None = None) -> list[tuple]:
        """(conversation id, message id, created_at, entry id, conversation updated_at) of the user's matches."""
        cursor.execute(
            f"""SELECT e.conversation_id, e.message_id, {self.stamp('e.created_at')}, e.id, {self.stamp('c.updated_at')}
                FROM {self.source}
                JOIN chat_conversation c ON c.id = e.conversation_id
                WHERE {self.driven} AND e.owner_id = %s AND c.owner_id = %s"""
            + (" LIMIT %s" if cap else ""),
            [self.param, self.owner_id, self.owner_id] + ([cap] if cap else []))
        return cursor.fetchall()

    def sparse_matches(self, cursor) -> list[tuple] | None:
        """All the user's matches when there are fewer than `dense`; None when there are more."""
        if self.vendor == "sqlite":
            cursor.execute(f"SELECT count(*) FROM (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s LIMIT %s) m",
                           [self.param, self.dense])
            return self.matches(cursor) if cursor.fetchone()[0] < self.dense else None
        rows = self.matches(cursor, cap=self.dense + 1)
        return rows if len(rows) <= self.dense else None

    def walk(self, cursor) -> list[str] | None:
        """The newest matching conversations among the WALK newest; None when that may not be all."""
        cursor.execute(
            f"""SELECT c.id FROM (
                    SELECT id, updated_at FROM chat_conversation WHERE owner_id = %s
                    ORDER BY updated_at DESC, id LIMIT %s) c
                WHERE EXISTS (SELECT 1 FROM chat_searchentry e WHERE e.conversation_id = c.id AND {self.entry})
                ORDER BY c.updated_at DESC, c.id LIMIT %s""",
            [self.owner_id, self.walk_size, self.param, self.limit])
        ids = [row[0] for row in cursor.fetchall()]
        if len(ids) < self.limit:
            cursor.execute("SELECT count(*) FROM (SELECT 1 FROM chat_conversation WHERE owner_id = %s LIMIT %s) c",
                           [self.owner_id, self.walk_size + 1])
            if cursor.fetchone()[0] > self.walk_size:
                return None  # older conversations, which the walk did not see, may match
        return ids

    def matches_in(self, cursor, ids: list[str]) -> list[tuple]:
        """The matching entries of these few conversations, by lookups per entry."""
        marks = ", ".join(["%s"] * len(ids))
        cursor.execute(
            f"""SELECT e.conversation_id, e.message_id, {self.stamp('e.created_at')}, e.id FROM chat_searchentry e
                WHERE e.conversation_id IN ({marks}) AND e.owner_id = %s AND {self.entry}""",
            [*ids, self.owner_id, self.param])
        return cursor.fetchall()


def _best(rows) -> dict[str, tuple[tuple, str, int]]:
    """Per conversation, the best of its matching entries: a message over the title, then the newest.

    Rows start with (conversation id, message id, created_at, entry id); the answer
    maps a conversation id to (sort key, message id, entry id).
    """
    best: dict[str, tuple[tuple, str, int]] = {}
    for conversation_id, message_id, created_at, entry_id, *_ in rows:
        key = (message_id != TITLE, created_at, entry_id)
        if conversation_id not in best or key > best[conversation_id][0]:
            best[conversation_id] = (key, message_id, entry_id)
    return best


def _hits(owner_id: int, query: str, words: list[str], limit: int) -> list[tuple[str, str, str]]:
    """(conversation id, message id or TITLE, text) of the best match of each found conversation."""
    if connection.vendor not in SETTINGS:
        return _hits_without_index(owner_id, words, limit)
    plan = _Plan(query, words, owner_id, limit)
    with connection.cursor() as cursor:
        rows = plan.sparse_matches(cursor)
        ids = plan.walk(cursor) if rows is None else None
        if ids is not None:
            best = _best(plan.matches_in(cursor, ids)) if ids else {}
        else:
            if rows is None:
                rows = plan.matches(cursor)
            updated = {row[0]: row[4] for row in rows}
            ids = sorted(sorted(updated), key=updated.__getitem__, reverse=True)[:limit]  # as the walk's ORDER BY
            chosen = set(ids)
            best = _best(row for row in rows if row[0] in chosen)
    texts = dict(SearchEntry.objects.filter(pk__in=[entry_id for _, _, entry_id in best.values()])
                 .values_list("pk", "text"))
    return [(cid, best[cid][1], texts.get(best[cid][2], "")) for cid in ids if cid in best]


def _hits_without_index(owner_id: int, words: list[str], limit: int) -> list[tuple[str, str, str]]:
    """Databases without a full-text index: a substring scan (correct, slow)."""
    entries = SearchEntry.objects.filter(owner_id=owner_id).order_by("-conversation__updated_at", "-created_at")
    for word in words:
        entries = entries.filter(text__icontains=word)
    picked: dict[str, tuple[str, str, str]] = {}
    for conversation_id, message_id, text in entries.values_list("conversation_id", "message_id", "text").iterator():
        if conversation_id not in picked or picked[conversation_id][1] == TITLE:
            picked[conversation_id] = (conversation_id, message_id, text)
    return list(picked.values())[:limit]


def snippet(text: str, words: list[str], width: int = SNIPPET_CHARS) -> str:
    """Plain text around the first match, about `width` characters, whitespace collapsed."""
    text = " ".join(text.split())
    start = 0
    if words:
        pattern = re.compile(r"(?<![^\W_])(?:" + "|".join(map(re.escape, words)) + r")(?![^\W_])", re.IGNORECASE)
        found = pattern.search(text)
        if found:
            start = max(0, found.start() - width // 3)
    if len(text) <= width:
        return text
    if start + width > len(text):
        start = max(0, len(text) - width)
    if start > 0:  # begin at a word boundary
        space = text.find(" ", start, start + 20)
        start = space + 1 if space != -1 else start
    piece = text[start:start + width]
    if start + width < len(text):
        space = piece.rfind(" ")
        piece = (piece[:space] if space > width // 2 else piece).rstrip() + "…"
    return ("…" if start > 0 else "") + piece


def search(user, query: str, limit: int = 20) -> list[dict]:
    """The user's conversations matching every word of `query`, newest first.

    Each result: `conversation` (metadata), `message` (id of the newest matching
    message, or None when only the title matches) and `snippet` (plain text).
    A query without a word (empty, or only punctuation) finds nothing.
    """
    words = query_words(query)
    if not words:
        return []
    hits = _hits(user.pk, query, words, limit)
    rows = Conversation.objects.filter(owner=user, pk__in=[hit[0] for hit in hits]).in_bulk()
    results = []
    for conversation_id, message_id, text in hits:
        row = rows.get(conversation_id)
        if row is None:  # deleted between the two queries
            continue
        results.append({"conversation": conversation_dict(row), "message": message_id or None,
                        "snippet": snippet(text, words)})
    return results
