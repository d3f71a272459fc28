"""The channel layer as config/settings.py builds it over the real Redis takes hundreds
of commands in flight at once: redis-py 8 caps a pool at 100 connections and fails the
rest ("Too many connections"), which lost every reply of 200 busy conversations."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.redis_layer import REDIS_URL, require_redis

REPO = Path(__file__).resolve().parent.parent
BURST = """
import asyncio, django
django.setup()
from channels.layers import get_channel_layer

async def main():
    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(4)]
    for i, name in enumerate(channels):
        await layer.group_add(f"g{i}", name)
    # 400 group sends at once: each holds a pooled connection while Redis answers.
    await asyncio.gather(*(layer.group_send(f"g{i % 4}", {"type": "x", "n": i}) for i in range(400)))
    got = 0
    for name in channels:
        while True:
            try:
                await asyncio.wait_for(layer.receive(name), 2)
                got += 1
            except asyncio.TimeoutError:
                break
    for i, name in enumerate(channels):
        await layer.group_discard(f"g{i}", name)
    print("received", got)

asyncio.run(main())
"""


def test_hundreds_of_layer_calls_in_flight_do_not_run_out_of_connections():
    require_redis()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "REDIS_URL": REDIS_URL,
           "REDIS_PREFIX": f"test-pool-{uuid.uuid4().hex[:8]}"}
    done = subprocess.run([sys.executable, "-c", BURST], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "400", done.stdout
