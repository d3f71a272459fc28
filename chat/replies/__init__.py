"""Replies owned by the server, not by the socket that asked for them.

- `claim` — the conversation's reply slot (one reply at a time, across processes).
- `task` — the streaming task: model → numbered deltas → the group → the store.
- `control` — the reply's own channel: stop and snapshot requests from any socket.
- `titling` — a title for a new conversation after its first reply.
- `shutdown` — on SIGTERM, every running reply is stored as interrupted before the process exits.
"""
