"""JSON log lines on stderr, without personal data.

`configure_logging(service, level)` installs one handler on the root logger that writes one JSON
object per line: `ts`, `level`, `service`, `logger`, `msg`, and only the whitelisted extra
fields in `EXTRA_FIELDS` (identifiers and Kafka coordinates, never personal data).

Exception text is the usual way personal data leaks into logs (`ValueError: invalid e-mail
x@y.fi`, a database's `Key (email)=(...)`). So for records of our own loggers (`OWN_LOGGERS`),
`ExceptionTextFilter` keeps the exception's type and stack frames but drops its message: from
the traceback, from the log message, and from exceptions passed as arguments. A call site that
knows its exception text is safe opts out with `extra=ALLOW_EXC_TEXT`.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Final, TextIO

OWN_LOGGERS: Final = ("services", "contracts", "cli", "deploy", "rekisteri", "faststream")
"""Logger name prefixes whose exception texts are scrubbed (FastStream logs handler errors)."""

EXTRA_FIELDS: Final = frozenset(
    {
        "customer_id",
        "event_id",
        "event_type",
        "correlation_id",
        "topic",
        "partition",
        "offset",
        "group_id",
        "message_id",
        "dlq_topic",
        "reason",
        "attempt",
        "attempts",
        "check",
        "count",
        "duration_ms",
        "port",
        "status",
    }
)
"""Extra record attributes copied into the JSON line; every other extra is dropped."""

ALLOW_EXC_TEXT: Final = {"allow_exc_text": True}
"""`extra=` of a log call whose exception text is known to hold no personal data."""

REDACTED: Final = "<redacted>"
_HANDLER_MARK: Final = "_rekisteri_json"
_FOREIGN_LOGGERS: Final = ("faststream", "faststream.access.kafka")
"""Loggers FastStream gives their own stdout handlers; routed through ours instead."""


def _is_own(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return ""


class ExceptionTextFilter(logging.Filter):
    """Drops exception messages from records of our own loggers, keeping type and frames."""

    def __init__(self, prefixes: tuple[str, ...] = OWN_LOGGERS) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub the record in place; never drops it."""
        if not _is_own(record.name, self.prefixes) or getattr(record, "allow_exc_text", False):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        try:
            message = record.getMessage()
            if isinstance(record.args, tuple) and any(
                isinstance(a, BaseException) for a in record.args
            ):
                safe = tuple(
                    type(a).__name__ if isinstance(a, BaseException) else a for a in record.args
                )
                message = str(record.msg) % safe
        except (TypeError, ValueError, KeyError):
            message = str(record.msg)
        if exc is not None:
            if text := _text_of(exc):
                message = message.replace(text, REDACTED)
            record.exc_type = type(exc).__name__
            record.exc_stack = "".join(traceback.format_tb(exc.__traceback__))
            record.exc_info = None
            record.exc_text = None
        record.msg = message
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: fixed fields plus the whitelisted extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                value = record.__dict__[name]
                is_scalar = value is None or isinstance(value, (str, int, float, bool))
                out[name] = value if is_scalar else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        elif exc_type := getattr(record, "exc_type", None):
            out["exc_type"] = exc_type
            out["exc_stack"] = getattr(record, "exc_stack", "")
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (stderr) as JSON lines, exception texts scrubbed.

    Idempotent: a second call replaces the handler of the first. Call it after the service's
    imports, so FastStream's own logger is already there to be routed through this handler.

    Args:
        service: The service name put on every line.
        level: The root level (`DEBUG`, `INFO`, `WARNING`, `ERROR`).
        stream: Where to write; stderr by default (tests pass a buffer).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(ExceptionTextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        for h in list(foreign.handlers):
            foreign.removeHandler(h)
        foreign.propagate = True
        foreign.setLevel(logging.NOTSET)
    # aiokafka is chatty at INFO (group joins, every reconnect); keep it to warnings.
    logging.getLogger("aiokafka").setLevel(
        logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    )
