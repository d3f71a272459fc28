"""How fast is `conversation.search` for a user with a lot of history?

Seeds one user with 10,000 conversations and 200,000 messages (--quick: 1,000 and
20,000) straight into Conversation and SearchEntry with bulk_create (the full-text
index follows: SQLite triggers, PostgreSQL's generated column), then times
chat.search.search() — the whole service call: match, pick one hit per conversation,
load the metadata, cut the snippets — for about 50 queries of different selectivity.

    python3 bench/search_bench.py [--quick]                       # SQLite (FTS5), a throwaway file
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        python3 bench/search_bench.py [--quick]                   # PostgreSQL: a throwaway database
                                                                 # (search_bench_<pid>), dropped after

The text is synthetic: words drawn from a 5,000-word vocabulary with a Zipf
distribution, so that "common" words hit a large share of the messages and "rare"
ones a handful.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dor", "fen", "gal", "hul", "jor"]


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    words: list[str] = []
    seen = set()
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def setup_django(postgres: bool, scratch: Path):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["CHAT_DATA_DIR"] = str(scratch / "conversations")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if not postgres:
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'bench.sqlite3'}"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if postgres:
        connection.settings_dict.setdefault("TEST", {})["NAME"] = f"search_bench_{os.getpid()}"
        original = connection.settings_dict["NAME"]
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        return lambda: connection.creation.destroy_test_db(original, verbosity=0)
    call_command("migrate", verbosity=0)
    return lambda: None


def seed(conversations: int, messages: int, rng: random.Random, words: list[str]):
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from chat.models import Conversation, SearchEntry

    weights = [1 / (rank + 1) for rank in range(len(words))]
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    per_conversation = messages // conversations
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows, entries = [], []
    for i in range(conversations):
        created = start + timedelta(minutes=10 * i)
        title = " ".join(rng.choices(words, weights, k=rng.randint(2, 5))).capitalize()
        row = Conversation(owner=user, title=title, model="bench/model", created_at=created,
                           updated_at=created + timedelta(seconds=30 * per_conversation))
        rows.append(row)
        entries.append(SearchEntry(conversation_id=row.id, owner=user, message_id="", role="title", text=title,
                                   created_at=created))
        for j in range(per_conversation):
            length = rng.randint(5, 40) if j % 2 == 0 else rng.randint(20, 120)
            text = " ".join(rng.choices(words, weights, k=length))
            entries.append(SearchEntry(conversation_id=row.id, owner=user, message_id=f"{i:08x}{j:08x}",
                                       role="user" if j % 2 == 0 else "assistant", text=text,
                                       created_at=created + timedelta(seconds=30 * j)))
    began = time.perf_counter()
    with transaction.atomic():
        Conversation.objects.bulk_create(rows, batch_size=2000)
        SearchEntry.objects.bulk_create(entries, batch_size=2000)
    return user, len(entries), time.perf_counter() - began


def queries(rng: random.Random, words: list[str]) -> list[tuple[str, str]]:
    picks = []
    picks += [("common word", words[rank]) for rank in range(0, 10)]
    picks += [("mid word", words[rank]) for rank in rng.sample(range(100, 600), 10)]
    picks += [("rare word", words[rank]) for rank in rng.sample(range(3500, 5000), 10)]
    picks += [("two words", f"{words[rng.randrange(0, 50)]} {words[rng.randrange(200, 1000)]}") for _ in range(10)]
    picks += [("three words", " ".join(words[rng.randrange(0, 300)] for _ in range(3))) for _ in range(5)]
    picks += [("no match", "zzxqj"), ("no match", "nothing here matches"),
              ("syntax", '"unbalanced NEAR(' + words[3]), ("syntax", f"-{words[5]} *"), ("punctuation", "*()-\"")]
    return picks


def database_size() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('chat_searchentry'))")
            return f"chat_searchentry with its indexes: {cursor.fetchone()[0]}"
        cursor.execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        return f"database file: {cursor.fetchone()[0] / 1e6:.0f} MB"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 conversations / 20,000 messages")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each query (after one warm-up run)")
    args = parser.parse_args()
    conversations, messages = (1_000, 20_000) if args.quick else (10_000, 200_000)
    postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    scratch = Path(tempfile.mkdtemp(prefix="search-bench-"))
    teardown = lambda: None  # noqa: E731
    try:
        teardown = setup_django(postgres, scratch)
        from django.db import connection

        from chat import search

        rng = random.Random(42)
        words = vocabulary(rng)
        user, entries, seconds = seed(conversations, messages, rng, words)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE chat_searchentry")
                cursor.execute("ANALYZE chat_conversation")
        else:
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO chat_searchentry_fts(chat_searchentry_fts) VALUES ('optimize')")
                cursor.execute("ANALYZE")
        print(f"{connection.vendor}: {conversations:,} conversations, {entries:,} search entries "
              f"(messages + titles), seeded in {seconds:.1f} s; {database_size()}")

        picks = queries(rng, words)
        timings: dict[str, list[float]] = {}
        hits: dict[str, list[int]] = {}
        for kind, query in picks:
            search.search(user, query)  # warm-up
            for _ in range(args.runs):
                began = time.perf_counter()
                results = search.search(user, query)
                timings.setdefault(kind, []).append((time.perf_counter() - began) * 1000)
            hits.setdefault(kind, []).append(len(results))

        everything = [t for samples in timings.values() for t in samples]
        print(f"\n{len(picks)} queries x {args.runs} runs, limit 20 results; times in ms")
        print(f"{'query kind':<14} {'queries':>7} {'results':>8} {'median':>8} {'p99':>8} {'max':>8}")
        for kind, samples in list(timings.items()) + [("all", everything)]:
            count = len(samples) // args.runs
            shown = statistics.mean(hits[kind]) if kind in hits else statistics.mean([h for v in hits.values() for h in v])
            print(f"{kind:<14} {count:>7} {shown:>8.1f} {statistics.median(samples):>8.2f} "
                  f"{percentile(samples, 99):>8.2f} {max(samples):>8.2f}")
    finally:
        teardown()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
