"""The event's log position on the wire: kept in the outbox row's headers, sent as the
CloudEvents extension ``tidingsposition``, read back into the record's metadata."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.formats.json import JSONFormat

from tidings import BadMessageError
from tidings.serialization.cloudevents import from_message, to_message, with_position

from .test_cloudevents import document, encode, record


def test_the_outbox_headers_take_the_position_beside_what_they_hold() -> None:
    """Spliced into the JSON object, empty or not; a record off the log (position 0, a
    sent message) is left as it is; a key of the same name is overridden on reading."""
    assert json.loads(with_position(b"{}", 57)) == {"source_position": 57}
    assert json.loads(with_position(b'{"correlation_id":"c-1"} ', 57)) == {
        "correlation_id": "c-1",
        "source_position": 57,
    }
    assert with_position(b'{"a":1}', 0) == b'{"a":1}'
    assert json.loads(with_position(b'{"source_position":"mine"}', 9))["source_position"] == 9


def test_the_position_travels_as_a_string_extension_and_comes_back_in_the_metadata() -> None:
    """``tidingsposition`` is a string of digits (a CloudEvents Integer is 32-bit), which
    the official SDK reads as any extension; the reader puts it back as an int."""
    position = 2**40 + 7  # past what a CloudEvents Integer holds
    sent = to_message(record(metadata=with_position(b"{}", position)), "orders")
    assert json.loads(sent.body)["tidingsposition"] == str(position)
    assert JSONFormat().read(None, sent.body).get_extension("tidingsposition") == str(position)
    metadata = json.loads(from_message(sent.body).metadata)
    assert metadata == {"source": "orders", "source_position": position}


def test_a_message_without_a_position_reads_as_before_and_an_int_one_is_taken() -> None:
    """Older producers send none; a producer that sends an int is understood."""
    assert "tidingsposition" not in json.loads(to_message(record(), "orders").body)
    assert json.loads(from_message(encode(document())).metadata) == {"source": "orders"}
    taken = from_message(encode(document(tidingsposition=12)))
    assert json.loads(taken.metadata)["source_position"] == 12


@pytest.mark.parametrize("value", ["", "-3", "1e3", "٣", "0", 0, -1, True, 2**63, 1.5, [1]])
def test_a_position_that_is_none_is_bad_input_saying_what_a_position_is(value: object) -> None:
    """Refused with the attribute, the value and the rule, so the consumer parks it."""
    with pytest.raises(BadMessageError, match="tidingsposition") as raised:
        from_message(encode(document(tidingsposition=value)))
    assert "position in its source's log" in str(raised.value) or "Expected" in str(raised.value)
