"""autobahn's debug lines, formatted only if one is ever written.

autobahn builds the arguments of its `log.debug` calls whether debug logging is on or
not: on every new connection `_connectionMade` pretty-prints the protocol's 29
options (`pprint.pformat`, 119 µs), and `hltype` and `hlval` colour a method's name
and a value (`click.style`) for debug lines on every handshake, every read and every
frame sent (`hlval` twice per frame: about 1.5 % of the server's CPU per relayed
token, py-spy, bench §2). With debug off (always, in production) those strings are
thrown away. In a burst of 200 handshakes the
pretty-printing alone was 9–11 % of the event loop (bench §1, py-spy).

autobahn looks these names up in its own modules when it calls them, so they are
replaced there by versions that return a placeholder, formatted by the real function
when a log line that holds it is written. Nothing else in autobahn uses them, except
`Timings.__str__`, which keeps the real `pformat`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Deferred:
    """A call made only when its result is shown."""

    __slots__ = ("_args", "_function", "_kwargs")

    def __init__(self, function: Callable[..., str], args: tuple, kwargs: dict) -> None:
        self._function, self._args, self._kwargs = function, args, kwargs

    def __str__(self) -> str:
        return str(self._function(*self._args, **self._kwargs))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    __repr__ = __str__


def deferring(function: Callable[..., str]) -> Callable[..., Deferred]:
    def deferred(*args: Any, **kwargs: Any) -> Deferred:
        return Deferred(function, args, kwargs)

    deferred.__wrapped__ = function
    return deferred


def install() -> None:
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol

    if hasattr(protocol.pformat, "__wrapped__"):
        return  # installed already
    real_pformat = protocol.pformat
    protocol.pformat = deferring(real_pformat)
    protocol.Timings.__str__ = lambda self: real_pformat(self._timings)
    for module in (protocol, twisted_websocket):
        module.hltype = deferring(module.hltype)
        module.hlval = deferring(module.hlval)
