"""Seed a benchmark server's database and store: users, tokens, session cookies, conversations.

Run with the server's environment (`bench.servers.seed` does): reads a JSON spec on
stdin, prints one JSON line. Rows go in with bulk_create; transcripts through the
configured store (folder or S3), titled so that no title request is made.

    {"groups": [{"prefix": "relay", "users": 500, "conversations": 1, "transcripts": 1,
                 "prior_messages": 0, "token": true, "cookie": false}]}
"""
from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    import django

    django.setup()
    from django.conf import settings

    spec = json.load(sys.stdin)
    model = spec.get("model") or (settings.HF_MODELS[0] if settings.HF_MODELS else "bench/fake")
    out = [seed_group(group, model) for group in spec["groups"]]
    print(json.dumps({"groups": out}))


def seed_group(group: dict, model: str) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from chat.models import ApiToken, Conversation, hash_token
    from chat.store import get_store

    User = get_user_model()
    prefix, count = group["prefix"], int(group.get("users", 1))
    names = [f"{prefix}{i}" for i in range(count)]
    User.objects.bulk_create([User(username=name, password="!") for name in names], batch_size=1000)
    users = {u.username: u for u in User.objects.filter(username__in=names)}
    raw_tokens: dict[str, str] = {}
    if group.get("token", True):
        tokens = []
        for name in names:
            raw = ApiToken.PREFIX + secrets.token_urlsafe(32)
            raw_tokens[name] = raw
            tokens.append(ApiToken(user=users[name], name="bench", key_hash=hash_token(raw), key_hint=raw[:12]))
        ApiToken.objects.bulk_create(tokens, batch_size=1000)

    per_user = int(group.get("conversations", 0))
    with_transcripts = int(group.get("transcripts", per_user))
    prior = int(group.get("prior_messages", 0))
    now = timezone.now()
    store = get_store()
    result = []
    for name in names:
        user = users[name]
        rows = [Conversation(owner=user, title=f"Benchmark conversation {k}", model=model,
                             created_at=now - timedelta(seconds=k), updated_at=now - timedelta(seconds=k))
                for k in range(per_user)]
        Conversation.objects.bulk_create(rows, batch_size=2000)
        opened = rows[:with_transcripts]
        for row in opened:
            store.create(transcript_for(row, user.pk, model, prior))
        entry = {"username": name, "id": user.pk, "token": raw_tokens.get(name),
                 "conversations": [row.pk for row in opened]}
        if group.get("cookie"):
            client = Client()
            client.force_login(user)
            entry["cookie"] = f"sessionid={client.cookies['sessionid'].value}"
        result.append(entry)
    return result


def transcript_for(row, user_id: int, model: str, prior_messages: int):
    """A titled transcript with `prior_messages` alternating user / assistant messages."""
    from chat.transcript import Transcript
    from tests.fake_model_server import markdown_tokens

    transcript = Transcript.new(row.pk, user_id, model=model, title=row.title)
    reply = "".join(markdown_tokens(120))
    parent = None
    for k in range(prior_messages):
        if k % 2 == 0:
            message = transcript.add_message(parent, "user", f"Question {k // 2}: how does the relay keep up?")
        else:
            message = transcript.add_message(parent, "assistant", reply, model=model, status="complete")
        parent = message.id
    return transcript


if __name__ == "__main__":
    main()
