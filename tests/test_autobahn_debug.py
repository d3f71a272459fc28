"""config/autobahn_debug.py: autobahn's debug arguments are formatted only when a line is written."""
from __future__ import annotations

import io
import pprint

from autobahn.twisted import websocket as twisted_websocket
from autobahn.websocket import protocol
from twisted.logger import Logger, LogLevel, globalLogPublisher, textFileLogObserver

from config import autobahn_debug


def test_a_deferred_call_runs_only_when_shown():
    calls = []

    def expensive(value, width=1):
        calls.append(value)
        return f"{value:>{width}}"

    deferred = autobahn_debug.deferring(expensive)("x", width=3)
    assert calls == []  # built, never shown: nothing formatted
    assert f"[{deferred}]" == "[  x]" and str(deferred) == "  x" and f"{deferred:>5}" == "    x"
    assert calls == ["x", "x", "x"]


def test_after_install_autobahns_names_defer_and_still_format_the_same():
    autobahn_debug.install()
    autobahn_debug.install()  # twice is once
    options = [("autoPingInterval", 0, "Factory"), ("perMessageCompressionAccept", None, "Factory")]
    deferred = protocol.pformat(options)
    assert isinstance(deferred, autobahn_debug.Deferred) and str(deferred) == pprint.pformat(options)
    assert protocol.pformat.__wrapped__ is pprint.pformat  # wrapped once, not twice
    for module in (protocol, twisted_websocket):
        assert isinstance(module.hlval(1234), autobahn_debug.Deferred) and "1234" in str(module.hlval(1234))
        assert isinstance(module.hltype(test_a_deferred_call_runs_only_when_shown), autobahn_debug.Deferred)
        assert "test_a_deferred_call_runs_only_when_shown" in str(
            module.hltype(test_a_deferred_call_runs_only_when_shown))
    timings = protocol.Timings()
    timings.track("start")
    assert str(timings).startswith("{") and "start" in str(timings)  # a real string, as before


def test_a_debug_line_written_shows_the_formatted_value():
    autobahn_debug.install()
    out = io.StringIO()
    observer = textFileLogObserver(out)
    globalLogPublisher.addObserver(observer)
    try:
        Logger(namespace="test").emit(LogLevel.debug, "\n{attrs}", attrs=protocol.pformat([("a", 1, "F")]))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert "[('a', 1, 'F')]" in out.getvalue()
