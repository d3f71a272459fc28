"""`python -m bench.chaos`: restarts and crashes (issue 15), with numbers.

    python -m bench.chaos cost [--database URL]   checkpoint cost per beat and per token
    python -m bench.chaos lost [--kills 8]        text lost under SIGKILL, and time until usable
    python -m bench.chaos run [--seconds 300]     the long chaos run (tests/chaos.py)

Each prints one JSON object. `cost` times the heartbeat UPDATE of chat/replies/claim.py
in this process (SQLite in a temporary folder unless --database names another), with and
without the reply's text; `lost` and `run` start real daphne processes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.fake_model_server import FakeModelServer
from tests.live_server import LiveServer, server_env

TOKEN_RATE = 50  # tokens per second: the local model on these machines; hosted models are similar


def checkpoint_cost(database_url: str, workdir: Path, beats: int = 300) -> dict:
    """Seconds per heartbeat, with the text of a reply of 1, 8 and 32 KB and without it."""
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url,
                       "CHAT_DATA_DIR": str(workdir / "conversations"), "SECRET_KEY": secrets.token_urlsafe(32),
                       "REDIS_URL": "", "AWS_STORAGE_BUCKET_NAME": ""})
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from chat.models import Conversation
    from chat.replies import claim

    call_command("migrate", verbosity=0, interactive=False)
    user, _ = get_user_model().objects.get_or_create(username=f"bench-{secrets.token_hex(4)}")
    row = Conversation.objects.create(owner=user, model="bench", reply_message="r" * 16)

    def timed(text: str | None) -> float:
        samples = []
        for i in range(beats):
            started = time.perf_counter()
            claim.beat(row.pk, row.reply_message, text, i)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    result = {"database": database_url.split(":")[0], "beats": beats, "tokens_per_second": TOKEN_RATE}
    plain = timed(None)
    result["beat_ms"] = round(plain * 1000, 3)
    for kb in (1, 8, 32):
        with_text = timed("w" * (kb * 1024))
        result[f"beat_with_{kb}kb_ms"] = round(with_text * 1000, 3)
        # A beat a second stores the text once per second, whatever the token rate.
        result[f"extra_per_token_us_{kb}kb"] = round((with_text - plain) / TOKEN_RATE * 1e6, 2)
        result[f"whole_beat_per_token_us_{kb}kb"] = round(with_text / TOKEN_RATE * 1e6, 1)
    row.delete()
    return result


async def lost_text(workdir: Path, kills: int, seed: int = 15) -> dict:
    """Kill the writing process `kills` times mid-reply; how much text each kill lost, and when
    the conversation took a message again."""
    from chat.client.tab import Tab

    rng = random.Random(seed)
    lost, usable = [], []
    with FakeModelServer() as model:
        env = server_env(workdir, model.url, CHAT_RATE_LIMIT_MESSAGES="10000", HF_DAILY_REQUESTS_PER_USER="0",
                         HF_DAILY_REQUESTS_SITE="0")
        server = LiveServer(env, log_path=workdir / "daphne.log")
        server.manage("migrate", "--noinput")
        token = server.create_token("bench")
        server.start()
        try:
            for _ in range(kills):
                tab = await Tab.open(server.ws_url, token)
                await tab.send("message.send", conversation=None, content="long #tokens=5000 #delay=0.02")
                conversation = (await tab.receive("conversation.created"))["conversation"]["id"]
                reply = (await tab.receive("reply.started"))["message"]
                await tab.receive("reply.delta", seq=rng.randrange(40, 160), timeout=30)
                killed = time.time()
                os.kill(server.process.pid, signal.SIGKILL)
                await asyncio.to_thread(server.process.wait, 10)
                await tab.close()
                server.start()
                again = await Tab.open(server.ws_url, token)
                await again.send("conversation.open", conversation=conversation)
                state = await again.receive("conversation.state")
                while state["generating"] is not None:  # its checkpoint; then the recovered reply
                    state = await again.receive("conversation.state", timeout=30)
                usable.append(time.time() - killed)
                stored = state["messages"][-1]["content"]
                arrived, length = [], 0
                for at, piece in tab.replies[reply].deltas:
                    if length >= len(stored):
                        arrived.append(at)
                    length += len(piece)
                lost.append(killed - arrived[0] if arrived else 0.0)
                await again.close()
        finally:
            server.stop()
    return {"kills": kills, "lost_seconds_max": round(max(lost), 3), "lost_seconds_median": round(statistics.median(lost), 3),
            "usable_after_kill_seconds_max": round(max(usable), 2), "lost_seconds": [round(x, 3) for x in lost]}


async def chaos_run(workdir: Path, seconds: float, clients: int) -> dict:
    from tests import chaos

    with FakeModelServer() as model:
        run = chaos.Chaos(chaos.new_run_dir(workdir), model.url, clients=clients, tokens=200, delay=0.03)
        run.start()
        try:
            started = time.monotonic()
            result = await chaos.run(run, seconds=seconds, pause=(5.0, 15.0))
            result["wall_seconds"] = round(time.monotonic() - started, 1)
        finally:
            run.stop()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["cost", "lost", "run"])
    parser.add_argument("--database", default=None, help="DATABASE_URL for `cost` (default: SQLite in a temporary folder)")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        workdir = Path(tmp)
        if args.what == "cost":
            result = checkpoint_cost(args.database or f"sqlite:///{workdir / 'db.sqlite3'}", workdir)
        elif args.what == "lost":
            result = asyncio.run(lost_text(workdir, args.kills))
        else:
            result = asyncio.run(chaos_run(workdir, args.seconds, args.clients))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
