"""config/gc_tuning.py: a server process freezes its startup heap and collects cycles less often."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from config import gc_tuning

REPO = Path(__file__).resolve().parent.parent


def test_tune_freezes_what_exists_and_raises_the_thresholds():
    before = gc.get_threshold()
    try:
        gc_tuning.tune()
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # this test process's modules, at least
        assert gc.get_threshold() == gc_tuning.THRESHOLDS
        assert gc_tuning.THRESHOLDS[0] > 700  # CPython's default young threshold
        kept = [object()]  # made after the freeze: still tracked, still collectable
        assert gc.is_tracked(kept)
        gc_tuning.tune()  # twice is once: nothing made since, nothing more frozen
        assert gc.get_freeze_count() <= frozen + 50
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_cycles_made_after_the_freeze_are_still_collected():
    before = gc.get_threshold()
    try:
        gc_tuning.tune()

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2  # the two nodes of the cycle (and their __dict__s)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_application_loaded_by_daphne_is_tuned():
    # daphne imports config.asgi with daphne.server already imported: the tuning is wired
    # there, after the server's own installs, in the process that serves.
    code = ("import json, gc, daphne.server, config.asgi; "
            "print(json.dumps({'threshold': gc.get_threshold(), 'frozen': gc.get_freeze_count()}))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuple(seen["threshold"]) == gc_tuning.THRESHOLDS
    assert seen["frozen"] > 10000  # Django, Channels, daphne, the app: the startup heap
