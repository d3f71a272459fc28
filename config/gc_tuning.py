"""CPython's cyclic garbage collector, tuned for a server process that holds thousands of sockets.

Why: the collector runs a young collection every 700 net allocations of container
objects, an older one every 10 of those, and a full one whenever the objects that
survived grew by a quarter; each of these walks every object of the generations it
collects. A server whose heap grows by a few hundred objects per open socket (each tab's
consumer, its protocol, its buffers) and per running reply therefore keeps walking the
same long-lived objects: py-spy (with native frames) of one daphne process accepting
2,000 sockets while 2,000 to 6,000 were open found 17 % of the event loop's samples in
`gc_collect_main`, on the thread that every socket of the process waits for.

`tune()`, called once when the server has imported everything and before it accepts a
connection, moves the objects of that moment (modules, settings, URL patterns, the
application) out of the collector's sight with `gc.freeze()`, and raises the thresholds:
a young collection every `THRESHOLDS[0]` net allocations, and the older generations
walked a fraction as often. Objects are still freed by reference counting the moment
they are no longer used; only reference cycles wait a little longer to be collected.
"""
from __future__ import annotations

import gc

# (young, middle, old): a young collection every 50,000 net container allocations
# instead of 700; the middle generation after 20 of those, the old one after 20 of
# those (CPython still waits, too, until survivors grew by a quarter).
THRESHOLDS = (50_000, 20, 20)


def tune() -> None:
    """Freeze the startup heap and collect less often (idempotent)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
