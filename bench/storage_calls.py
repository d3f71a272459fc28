"""7. Storage calls per chat turn: must not grow with the conversation or with the user's history.

In this process: Django on a database of its own, the scripted model in a thread, and
the turn driven through the same service calls a socket's `message.send` makes
(chat.services.send_message, Turn.start, the reply task to its end). The store's own
`calls` counter (backend requests: GET, PUT, DELETE, list) is read before and after.
Run with the local folder store and with S3 (moto's ThreadedMotoServer on loopback).
"""
from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

from bench import report

CONTENT = "How many storage calls does this take? #tokens=20"
CASES = (  # label, conversations of the user, prior messages of the conversation
    ("1 prior message", 1, 1),
    ("200 prior messages", 1, 200),
    ("user with 1 conversation", 1, 2),
    ("user with 1,000 conversations", 1000, 2),
)


def configure(workdir: Path, model_url: str) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "0", "SECRET_KEY": "bench-" + secrets.token_urlsafe(48),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}", "CHAT_DATA_DIR": str(workdir / "conversations"),
        "HF_BASE_URL": model_url, "HF_MODELS": "bench/fake", "HF_TOKEN": "", "AWS_STORAGE_BUCKET_NAME": "",
        "REDIS_URL": "", "CHAT_RATE_LIMIT_MESSAGES": "1000000", "CHAT_RATE_LIMIT_FRAMES": "1000000",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def use_s3(endpoint: str, bucket: str) -> None:
    import boto3
    from django.conf import settings

    from chat.store import reset_store

    boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_S3_ENDPOINT_URL = endpoint
    settings.AWS_S3_REGION_NAME = "us-east-1"
    reset_store()


async def count_turn(user, conversation_id: str | None) -> int:
    """Storage calls of one turn: the user message, the reply, and (new conversation) its title."""
    from chat import services
    from chat.replies.task import running
    from chat.store import get_store

    store = get_store()
    before = store.calls
    turn = await services.send_message(user, conversation_id, CONTENT, None)
    await turn.start()
    deadline = time.monotonic() + 30
    while turn.reply.reply_id in running:
        if time.monotonic() > deadline:
            raise TimeoutError("the reply did not end within 30 s")
        await asyncio.sleep(0.01)
    return store.calls - before


async def count_open(row) -> int:
    from chat import services
    from chat.store import get_store

    store = get_store()
    before = store.calls
    await services.open_conversation(row)
    return store.calls - before


def measure_store(name: str) -> dict:
    from django.contrib.auth import get_user_model

    from bench.seed import seed_group
    from chat.models import Conversation

    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for i, (label, conversations, prior) in enumerate(CASES):
        entry = seed_group({"prefix": f"{name}-{i}-", "users": 1, "conversations": conversations, "transcripts": 1,
                            "prior_messages": prior, "token": False}, "bench/fake")[0]
        user = get_user_model().objects.get(pk=entry["id"])
        conversation = entry["conversations"][0]
        counts[label] = asyncio.run(count_turn(user, conversation))
        sizes[label] = transcript_size(user.pk, conversation)
    entry = seed_group({"prefix": f"{name}-new-", "users": 1, "conversations": 0, "token": False}, "bench/fake")[0]
    user = get_user_model().objects.get(pk=entry["id"])
    counts["new conversation (first turn, with its title)"] = asyncio.run(count_turn(user, None))
    row = Conversation.objects.filter(owner=user).first()
    counts["open a conversation"] = asyncio.run(count_open(row))
    return {"counts": counts, "sizes": sizes}


def transcript_size(user_id: int, conversation_id: str) -> int:
    """Bytes of the stored transcript (each write of this conversation rewrites them all)."""
    from chat.store import get_store
    from chat.store.contract import encode

    return len(encode(get_store().load(user_id, conversation_id)))


def run(mode: str, workdir: Path) -> dict:
    from moto.server import ThreadedMotoServer

    from tests.fake_model_server import FakeModelServer
    from tests.live_server import free_port

    result = report.section("storage_calls", "7. Storage calls per chat turn")
    stores = {}
    with FakeModelServer() as model:
        configure(workdir, model.url)
        stores["local folder"] = measure_store("local")
        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        try:
            use_s3(f"http://127.0.0.1:{port}", "bench-calls")
            stores["S3 (moto)"] = measure_store("s3")
        finally:
            moto.stop()
    rows = []
    for store, found in stores.items():
        counts = found["counts"]
        result["rows"].append(report.equal(
            f"{store}: calls per turn, conversation with 1 vs 200 prior messages",
            {"1": counts["1 prior message"], "200": counts["200 prior messages"]}))
        result["rows"].append(report.equal(
            f"{store}: calls per turn, user with 1 vs 1,000 conversations",
            {"1": counts["user with 1 conversation"], "1,000": counts["user with 1,000 conversations"]}))
        for label, calls in counts.items():
            size = found["sizes"].get(label)
            rows.append([store, label, calls, f"{size:,}" if size is not None else "—"])
    result["tables"].append({
        "title": "Backend requests (the store's `calls` counter) per operation",
        "headers": ["store", "operation", "storage calls", "transcript bytes after"],
        "rows": rows})
    result["notes"] += [
        "A turn in an existing conversation = the user message (read + conditional write) and the reply "
        "(read + conditional write). The number of calls is constant; the bytes moved are not: every write "
        "rewrites the whole transcript (see the size column).",
        "The sidebar and the claim live in the database, so the user's other conversations never cost a "
        "storage call.",
    ]
    return result
