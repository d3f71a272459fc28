"""Every benchmark section can be imported on its own, as `python -m bench` runs it: in a
fresh interpreter, with nothing set up before it (a section that imported the chat's
models before Django was set up once broke `make bench` silently)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SECTIONS

REPO = Path(__file__).resolve().parent.parent
MODULES = sorted({module for module, *_ in SECTIONS.values()} | {"bench.rendering", "bench.hostile_ping"})


@pytest.mark.parametrize("module", MODULES)
def test_a_benchmark_section_imports_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr[-2000:]
