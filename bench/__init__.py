"""The benchmark suite: `python3 -m bench` (full) and `python3 -m bench --quick`; see bench/__main__.py."""
