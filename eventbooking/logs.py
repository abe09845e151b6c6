"""Structured logging: key=value text for people, one JSON object per line for machines.

Every record also carries the trace id and span id of the span it was logged
in, and the saga id that the code running it set in `saga_id`, so that a
log line leads to its trace and its saga.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any, Literal

from eventbooking import telemetry

# Set by the saga runner around the work of one saga; every record logged meanwhile names it.
saga_id: ContextVar[str | None] = ContextVar("saga_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class ContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` inside a span, and `saga_id` when one is set.

    Values passed with `extra=` are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id, span_id = telemetry.current_ids()
        if trace_id is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace_id
            record.span_id = span_id
        saga = saga_id.get()
        if saga is not None and not hasattr(record, "saga_id"):
            record.saga_id = saga
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the time, level, logger, message and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Send every logger's records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # On the handler, not the root logger: logger filters skip records from child loggers.
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-statement SQL logging is for debugging sessions, not for service logs.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING if level != "DEBUG" else logging.INFO)
