"""Reading stored trace contexts, and the JSON log line, without any server."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

from tidings.observability import logs, tracing
from tidings.records import EventRecord

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
GOOD = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "garbage",
        f"ff-{TRACE_ID}-b7ad6b7169203331-01",  # version ff is invalid
        f"00-{TRACE_ID}-b7ad6b7169203331",  # no flags
        f"00-{TRACE_ID[:-1]}x-b7ad6b7169203331-01",  # not hex
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        f"00-{TRACE_ID}-0000000000000000-01",  # zero span id
    ],
)
def test_a_malformed_stored_traceparent_gives_no_parent(traceparent: str) -> None:
    """A message whose ``traceparent`` is not one is handled in a new trace, never
    refused or failed over it."""
    assert tracing._span_context(traceparent) is None


def test_a_stored_traceparent_is_read_as_the_remote_parent() -> None:
    """The trace id, span id and sampled flag of a well-formed ``traceparent``."""
    context = tracing._span_context(GOOD)
    assert context is not None
    assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (TRACE_ID, "b7ad6b7169203331")
    assert context.is_remote
    assert context.trace_flags.sampled


def test_the_stored_context_is_read_from_an_event_s_metadata() -> None:
    """Only ``traceparent`` and ``tracestate``; nothing from metadata without them or
    that is not JSON."""
    metadata = json.dumps({"correlation_id": "c", "traceparent": GOOD, "tracestate": "a=1"})
    assert tracing.stored_context(metadata.encode()) == {"traceparent": GOOD, "tracestate": "a=1"}
    assert tracing.stored_context(b'{"correlation_id": "c"}') == {}
    assert tracing.stored_context(b"{traceparent") == {}


def record_with(metadata: bytes) -> EventRecord:
    """An event record of stream cart-7 with ``metadata``."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return EventRecord("e-1", "cart-7", 1, "Counted", 1, moment, b"{}", metadata)


def test_a_json_log_line_carries_the_event_the_handler_and_the_trace() -> None:
    """One JSON object: time, level, logger, message, the fields passed with ``extra=``
    (``about`` gives the event's id, aggregate and stored trace id), and the error."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("tidings.test-json")
    logger.addHandler(handler)
    try:
        record = record_with(json.dumps({"traceparent": GOOD}).encode())
        try:
            raise RuntimeError("the card service timed out")
        except RuntimeError:
            logger.exception("event failed", extra=logs.about(record, "payments.charge"))
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["level"] == "ERROR"
    assert line["logger"] == "tidings.test-json"
    assert line["message"] == "event failed"
    assert (line["event_id"], line["aggregate"], line["handler"]) == (
        "e-1",
        "cart-7",
        "payments.charge",
    )
    assert line["trace_id"] == TRACE_ID
    assert "RuntimeError: the card service timed out" in line["error"]
    assert line["time"].endswith("+00:00")


def test_a_json_log_line_inside_a_span_carries_its_trace_id() -> None:
    """A line logged while a span is current, and given no trace id, carries the span's."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("tidings.test-json")
    logger.addHandler(handler)
    span = NonRecordingSpan(SpanContext(int(TRACE_ID, 16), 1, False, TraceFlags(1)))
    try:
        with use_span(span):
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trace_id"] == TRACE_ID
    assert "trace_id" not in outside


def test_an_unknown_log_format_is_refused() -> None:
    """Only text and json."""
    with pytest.raises(ValueError, match="not one of text, json"):
        logs.configure("xml")
