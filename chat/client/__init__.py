"""Clients of the chat socket protocol (docs/protocol.md), outside the server.

- `terminal` — the terminal client, `python -m chat.client` (docs/client.md); needs only
  `websockets` and the standard library, so the one file can be copied anywhere.
- `tab` — an async socket that records every frame as it arrives: the client of the
  tests that run against live server processes, and of the benchmarks (bench/).

Nothing here imports Django or the rest of the server (the `chat` package itself is only a
name space here: its `__init__` is empty).
"""
