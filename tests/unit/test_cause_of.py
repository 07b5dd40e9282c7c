"""What a message hands to the units of work it causes (``Cause.of``), from its metadata
as stored, whatever shape that metadata has."""

from __future__ import annotations

import json

import pytest

from tidings.application.causation import Cause

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_conversation_and_trace_context_are_taken_and_the_message_is_the_cause() -> None:
    metadata = {
        "correlation_id": "c-1",
        "causation_id": "earlier",
        "traceparent": TRACEPARENT,
        "tracestate": "k=v",
        "source": "shop",
        "source_position": 9,
    }
    cause = Cause.of("m-2", json.dumps(metadata).encode())
    assert cause == Cause("c-1", "m-2", {"traceparent": TRACEPARENT, "tracestate": "k=v"})


@pytest.mark.parametrize("metadata", [b"", b"{}", b'{"source":"shop"}'])
def test_a_message_without_a_conversation_starts_its_own(metadata: bytes) -> None:
    assert Cause.of("m-1", metadata) == Cause("m-1", "m-1", {})


def test_keys_of_another_type_are_skipped_one_by_one() -> None:
    """A correlation id that is not text does not count; the trace context still does."""
    metadata = json.dumps({"correlation_id": 42, "traceparent": TRACEPARENT, "tracestate": 7})
    assert Cause.of("m-1", metadata.encode()) == Cause("m-1", "m-1", {"traceparent": TRACEPARENT})


@pytest.mark.parametrize("metadata", [b"not json", b"[1, 2]", b'"text"', b'{"correlation_id": '])
def test_metadata_that_is_no_json_object_gives_a_conversation_of_its_own(metadata: bytes) -> None:
    assert Cause.of("m-1", metadata) == Cause("m-1", "m-1", {})


def test_an_empty_correlation_id_is_kept_as_it_was_stored() -> None:
    assert Cause.of("m-1", b'{"correlation_id": ""}').correlation_id == ""
