"""Log lines: the standard ``logging`` module, one logger per module under ``tidings.``.

Log calls about one event, handler, saga or projection pass what they know with
``extra=`` (``about`` builds it for an event); the workers' ``--log-format json`` writes
each record as one JSON object a line, with those fields and the current trace id, for
log shippers (docs/tracing.md).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from tidings.observability import tracing

if TYPE_CHECKING:
    from tidings.records import EventRecord

FIELDS = ("event_id", "aggregate", "handler", "saga_id", "projection", "position", "trace_id")
"""What a log call may pass with ``extra=``; a JSON line carries those it was given."""

FORMATS = ("text", "json")


def about(record: EventRecord, handler: str | None = None) -> dict[str, Any]:
    """The ``extra=`` of a log line about one event (and the handler it went to)."""
    extra = {"event_id": record.event_id, "aggregate": record.stream_id}
    if handler is not None:
        extra["handler"] = handler
    stored = tracing.stored_context(record.metadata).get("traceparent", "").split("-")
    if len(stored) == 4:  # the trace the event was recorded in
        extra["trace_id"] = stored[1]
    return extra


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, RFC 3339), level, logger, message, the known
    fields of ``FIELDS``, and the error with its traceback when one was logged."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if "trace_id" not in line:
            found = tracing.trace_id()  # formatted in the thread that logged: its span
            if found is not None:
                line["trace_id"] = found
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(log_format: str, stream: IO[str] | None = None) -> None:
    """Send the ``tidings`` loggers' records to ``stream`` (stderr) as ``log_format``:
    ``json`` (INFO and up, one object a line) or ``text`` (unchanged: warnings and errors
    as plain lines)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    if log_format == "text":
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tidings")
    for old in [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one line a record: not again through the root's handlers


def json_lines() -> bool:
    """True when the ``tidings`` loggers write JSON lines (``configure('json')``)."""
    handlers = logging.getLogger("tidings").handlers
    return any(isinstance(h.formatter, JsonFormatter) for h in handlers)
