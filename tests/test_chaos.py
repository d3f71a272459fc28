"""The short chaos run of issue 15 (the long one, with its numbers: `python -m bench.chaos`)."""
from __future__ import annotations

import pytest

from tests import chaos
from tests.fake_model_server import FakeModelServer

pytestmark = pytest.mark.slow


async def test_chaos_of_killed_processes_and_a_redis_restart_loses_and_locks_nothing(tmp_path):
    with FakeModelServer() as model:
        run = chaos.Chaos(chaos.new_run_dir(tmp_path), model.url, clients=20, tokens=60, delay=0.03,
                          env={"CHAT_REPLY_STALE_SECONDS": "4"})
        run.start()
        try:
            result = await chaos.run(run, seconds=30, pause=(3.0, 6.0))
        finally:
            run.stop()
    kills = [e for e in result["events"] if "SIGKILL" in e or "SIGTERM" in e]
    assert kills and "redis restarted" in result["events"], result
    assert result["turns"] >= 20, result  # every client got through at least one turn of its own
    assert set(result["statuses"]) <= chaos.FINAL_STATUSES, result
