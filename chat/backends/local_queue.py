"""Who uses the local model next: a fair waiting line (issue 15).

The local model writes one reply at a time. Before this line was fair, one account with
12 long replies queued made another user's first token wait 121 s, and a title request
delayed the next chat by 7.8 s. So:

- replies take turns across users: the next to run is the first waiting reply of the
  user served least recently (a user who has not been served yet goes first), so with
  any number of replies queued by one user, another user waits for at most the one in
  progress;
- titles run only when no reply is waiting;
- each waiting generation is told how many will run before it (`ahead`, counting the
  one in progress) whenever that number changes, so a reply can say "waiting for the
  model, 2 ahead";
- a user may have at most `max_replies` replies waiting or running (issue 16).

It is shared by the worker threads that run the model and by any number of event loops,
so it is guarded by a `threading.Condition`, not an asyncio lock (bound to one loop).
"""
from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from chat.backends.base import ModelError, Purpose

BUSY_MESSAGE = ("You already have {count} replies waiting for the local model. "
                "Wait for one of them to finish, or stop one, then try again.")


@dataclass(eq=False)
class Ticket:
    """One generation's place in the line."""

    user: Hashable
    purpose: Purpose
    on_wait: Callable[[int], None] | None = None
    arrival: int = 0
    ahead: int | None = None  # what `on_wait` was last told
    state: str = "waiting"  # "waiting", "running", "done" (finished or cancelled)


class FairQueue:
    """Grants the model to one ticket at a time, in the fair order described above.

    `join()` puts a ticket in line (ModelError "busy" past the user's cap), `wait_turn()`
    blocks a worker thread until its ticket runs, `leave()` gives the model back (or
    takes a waiting ticket out of line). `on_wait` callbacks are called with the lock
    held, from whichever thread changed the line: they must only hand the number on
    (the local backend posts it to its event loop).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[Ticket] = []  # in arrival order
        self._running: Ticket | None = None
        self._last_served: dict[Hashable, int] = {}
        self._starts = itertools.count(1)
        self._arrivals = itertools.count()

    # --- the line -----------------------------------------------------------
    def join(self, user: Hashable, purpose: Purpose = "reply", on_wait: Callable[[int], None] | None = None,
             max_replies: int = 0) -> Ticket:
        """Put a generation in line; it may be granted the model at once."""
        with self._cond:
            if purpose == "reply":
                self._check_room(user, max_replies)
            ticket = Ticket(user, purpose, on_wait, next(self._arrivals))
            self._waiting.append(ticket)
            self._changed()
            return ticket

    def wait_turn(self, ticket: Ticket) -> bool:
        """Block until `ticket` runs (True), or until it was taken out of line (False)."""
        with self._cond:
            while ticket.state == "waiting":
                self._cond.wait()
            return ticket.state == "running"

    def leave(self, ticket: Ticket) -> None:
        """The generation ended (the model is free again) or gave up its place."""
        with self._cond:
            if ticket.state == "done":
                return
            if ticket is self._running:
                self._running = None
            else:
                self._waiting.remove(ticket)
            ticket.state = "done"
            self._changed()

    def cancel(self, ticket: Ticket) -> None:
        """Take a waiting ticket out of line. A running one stays: its worker is using the
        model and leaves when it has stopped."""
        with self._cond:
            if ticket.state == "waiting":
                self._waiting.remove(ticket)
                ticket.state = "done"
                self._changed()

    def check_room(self, user: Hashable, max_replies: int) -> None:
        """ModelError("busy") if `user` has `max_replies` replies in line already (0: no cap)."""
        with self._cond:
            self._check_room(user, max_replies)

    def wait_until_empty(self, timeout: float | None = None) -> bool:
        """Block until nothing waits or runs (False on timeout): for shutdown and tests."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and self._running is None, timeout)

    # --- what callers may read ------------------------------------------------
    def order(self) -> list[Ticket]:
        """The waiting tickets, in the order they will run."""
        with self._cond:
            return self._order()

    def ahead_of(self, ticket: Ticket) -> int:
        """How many generations run before this one (0: it runs now)."""
        with self._cond:
            return self._ahead(self._order()).get(ticket, 0)

    @property
    def running(self) -> Ticket | None:
        return self._running

    def __len__(self) -> int:
        """Generations waiting or running (0: a new one starts at once)."""
        with self._cond:
            return len(self._waiting) + (self._running is not None)

    # --- inside the lock ------------------------------------------------------------
    def _check_room(self, user: Hashable, max_replies: int) -> None:
        count = self._replies_of(user)
        if max_replies > 0 and count >= max_replies:
            raise ModelError("busy", BUSY_MESSAGE.format(count=count))

    def _replies_of(self, user: Hashable) -> int:
        tickets = self._waiting + ([self._running] if self._running else [])
        return sum(1 for t in tickets if t.user == user and t.purpose == "reply")

    def _order(self) -> list[Ticket]:
        replies = [t for t in self._waiting if t.purpose == "reply"]
        titles = [t for t in self._waiting if t.purpose != "reply"]
        return self._take_turns(replies) + self._take_turns(titles)

    def _take_turns(self, tickets: list[Ticket]) -> list[Ticket]:
        """Round-robin across users: repeatedly the first ticket of the user served least
        recently (never served counts as longest ago; ties go to the earlier arrival)."""
        lanes: dict[Hashable, deque[Ticket]] = {}
        for ticket in tickets:
            lanes.setdefault(ticket.user, deque()).append(ticket)
        heap = [(self._last_served.get(user, 0), lane[0].arrival, index, user)
                for index, (user, lane) in enumerate(lanes.items())]
        heapq.heapify(heap)
        clock = max(self._last_served.values(), default=0)
        order: list[Ticket] = []
        while heap:
            _, _, index, user = heapq.heappop(heap)
            lane = lanes[user]
            order.append(lane.popleft())
            clock += 1
            if lane:
                heapq.heappush(heap, (clock, lane[0].arrival, index, user))
        return order

    def _ahead(self, order: list[Ticket]) -> dict[Ticket, int]:
        running = 1 if self._running is not None else 0
        return {ticket: running + i for i, ticket in enumerate(order)}

    def _changed(self) -> None:
        """Grant the model if it is free, then tell every ticket whose position moved."""
        order = self._order()
        if self._running is None and order:
            ticket = order.pop(0)
            self._waiting.remove(ticket)
            self._running, ticket.state = ticket, "running"
            self._last_served[ticket.user] = next(self._starts)
            self._tell(ticket, 0)
        for ticket, ahead in self._ahead(order).items():
            self._tell(ticket, ahead)
        self._cond.notify_all()

    @staticmethod
    def _tell(ticket: Ticket, ahead: int) -> None:
        if ticket.ahead != ahead:
            ticket.ahead = ahead
            if ticket.on_wait is not None:
                ticket.on_wait(ahead)
