"""Each connection's inbox from daphne to the application: a list and a waiter, not an asyncio.Queue.

Why: daphne hands the application a connection's events (`websocket.connect`,
`websocket.receive`, `websocket.disconnect`) through an `asyncio.Queue` made for the
connection, which an idle socket keeps for its whole life. A Queue is four deques (its
items, its getters, its putters and its `join` event's waiters), each a 64-slot block:
about 3 KB of the 42 KB that an idle socket cost (tracemalloc, bench §4), to hold
nothing most of the time. `Inbox` keeps the same events in the same order, and holds a
list only while something is in it or someone waits.

`install` makes daphne's `Server.create_application` give the application an `Inbox`;
the rest of what that method does is unchanged (one application instance per protocol,
run as a future that daphne's checker watches).
"""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Any


class Inbox:
    """The part of asyncio.Queue that daphne and an ASGI application use: `put_nowait` and `get`."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._waiters: list[asyncio.Future] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        self._wake_one()

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            waiters = self._waiters
            waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in waiters:
                    waiters.remove(waiter)
                if self._items:  # woken, then cancelled: the next getter takes the item
                    self._wake_one()
                raise
        items = self._items
        item = items.pop(0)
        if not items:
            self._items = None
        return item

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
        if not waiters:
            self._waiters = None


def create_application(server, protocol, scope: dict):
    """daphne's `Server.create_application` with an `Inbox` for the connection's events."""
    assert "application_instance" not in server.connections[protocol]
    inbox = Inbox()
    scope.setdefault("asgi", {"version": "3.0"})
    instance = server.application(scope=scope, receive=inbox.get, send=partial(server.handle_reply, protocol))
    if protocol not in server.connections:
        return None
    server.connections[protocol]["application_instance"] = asyncio.ensure_future(instance, loop=asyncio.get_event_loop())
    return inbox


def install() -> None:
    """Give daphne's connections an Inbox (idempotent). Before config/frame_writer.py's
    install, which wraps whatever `create_application` is then."""
    from daphne.server import Server

    if getattr(Server.create_application, "makes_inbox", False):
        return

    def make(self, protocol, scope):
        return create_application(self, protocol, scope)

    make.makes_inbox = True
    Server.create_application = make
