"""Log formatters that show a record's structured fields (`logger.info(..., extra={...})`).

`LOG_FORMAT=plain` (the default) renders one human-readable line ending in
`key=value` pairs; `LOG_FORMAT=json` renders one JSON object per line, for a log
service that indexes fields (Heroku add-ons, Loki, CloudWatch, ...). Either way a
record is one line: tracebacks are folded into the line (JSON) or appended below it
(plain), and only the fields passed in `extra` are added, nothing else of the record.
"""
from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any

# Every attribute a LogRecord has of its own; anything else on a record came from `extra`.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given in `extra`, in the order they were given."""
    return {key: value for key, value in vars(record).items() if key not in _RESERVED and not key.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    """`2026-11-25T10:00:00.123Z INFO chat.replies reply ended conversation=ab12 model=x seconds=1.2`"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{key}={_plain_value(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


# A share link's token is the whole secret (chat/sharing.py): it must not reach a log
# through a request line, a "Not Found" warning or a field.
_SHARE_TOKEN = re.compile(r"/s/[A-Za-z0-9_-]{8,}")
REDACTED_SHARE = "/s/[redacted]"


def redact(text: str) -> str:
    """`text` with every share link's token replaced."""
    return _SHARE_TOKEN.sub(REDACTED_SHARE, text) if "/s/" in text else text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and fields before any formatter sees them (Django's
    `django.request` warnings carry the request itself as a field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/s/" in message:
            record.msg, record.args = redact(message), ()
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
            elif key == "request" and value is not None:
                setattr(record, key, redact(str(value)))
        return True


# daphne's access log lines for a socket's handshake and close: the consumer logs the same
# events itself ("socket connected", "socket closed", "socket refused"), with the user and
# the close code. Three more lines per socket were 5 % of the event loop's samples during
# handshakes (py-spy, bench §4): a timestamp formatted and a write to stdout for each, about
# 15 µs per socket measured alone.
SOCKET_LINES_LOGGED_BY_THE_APP = frozenset({"connecting", "connected", "disconnected"})


def install_access_log() -> None:
    """daphne writes its access log lines to a stream, not through logging: redact the
    request line it writes, and leave out the socket lines the consumer logs (idempotent).
    HTTP requests and refused handshakes (`WSREJECT`) keep their lines."""
    from daphne.access import AccessLogGenerator

    if getattr(AccessLogGenerator.write_entry, "redacted", False):
        return
    write_entry, log_action = AccessLogGenerator.write_entry, AccessLogGenerator.__call__

    def redacted_write_entry(self, host, date, request, *args, **kwargs):
        return write_entry(self, host, date, redact(request), *args, **kwargs)

    def without_socket_lines(self, protocol, action, details):
        if protocol == "websocket" and action in SOCKET_LINES_LOGGED_BY_THE_APP:
            return None
        return log_action(self, protocol, action, details)

    redacted_write_entry.redacted = True
    AccessLogGenerator.write_entry = redacted_write_entry
    AccessLogGenerator.__call__ = without_socket_lines


def logging_config(fmt: str, level: str) -> dict:
    """The LOGGING setting for LOG_FORMAT (`json` or `plain`) and LOG_LEVEL."""
    fmt = (fmt or "plain").strip().lower()
    if fmt not in ("json", "plain"):
        raise ValueError(f"LOG_FORMAT must be json or plain, not {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"()": "config.logging.KeyValueFormatter"},
            "json": {"()": "config.logging.JsonFormatter"},
        },
        "filters": {"redact": {"()": "config.logging.RedactSecrets"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt, "filters": ["redact"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.channels.server": {"level": "WARNING"},
            # httpx2 logs every model request at INFO ("HTTP Request: POST …"): a second line
            # per reply and per title next to our own "reply started"/"reply ended", which
            # say more (conversation, model, outcome), and 13 µs of the loop each.
            "httpx2": {"level": "WARNING"},
            # Only our handler: Django's own console handler (DEBUG=1) would print its
            # records a second time, unformatted and unredacted.
            "django": {"handlers": [], "level": "INFO", "propagate": True},
        },
    }
