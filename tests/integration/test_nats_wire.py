"""The NATS publisher's own publish commands, against the real server: what the stream
stores is what nats-py's publish would have stored, a message is refused alone, and the
server's size limit is checked on the exact header block."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from nats.js import JetStreamContext

import tidings.adapters.nats as nats_adapter
from tests.integration.brokers import NatsHarness, event, run_nats, unique
from tidings.adapters.nats import NatsPublisher
from tidings.adapters.nats_wire import Commands
from tidings.ports import OutgoingMessage
from tidings.serialization.cloudevents import CONTENT_TYPE

pytestmark = pytest.mark.nats


@pytest.fixture
def harness(nats_url: str) -> Iterator[NatsHarness]:
    made = NatsHarness(nats_url)
    try:
        yield made
    finally:
        made.cleanup()


def stored(harness: NatsHarness, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """Subject, headers and data of the stream's first ``count`` messages."""
    found: list[tuple[str, dict[str, str], bytes]] = []

    async def read(js: JetStreamContext) -> None:
        for seq in range(1, count + 1):
            message = await js.get_msg(harness.stream, seq)
            found.append((message.subject, dict(message.headers or {}), message.data or b""))

    run_nats(harness.url, read)
    return found


def messy(message: OutgoingMessage) -> OutgoingMessage:
    """The message with headers of its own whose values nats-py cleans on the way out."""
    return replace(message, headers={"traceparent": " 00-ab\r\n-01 ", "x-empty": ""})


def test_the_stream_stores_what_nats_py_publish_would_have_stored(
    harness: NatsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One message through our commands, the same one again (a new id) through nats-py's
    ``publish``: subject, headers and data match."""
    message = messy(event("order-7", 1))
    again = replace(message, message_id=message.message_id + "-again")
    publisher = harness.publisher()
    assert publisher.publish([message]) == [None]
    monkeypatch.setattr(nats_adapter, "can_send_raw", lambda client: False)
    assert publisher.publish([again]) == [None]
    ours, theirs = stored(harness, 2)
    assert ours[0] == theirs[0] == f"{harness.prefix}.order.placed"
    assert ours[2] == theirs[2] == message.body
    assert theirs[1].pop("Nats-Msg-Id") == again.message_id
    assert ours[1].pop("Nats-Msg-Id") == message.message_id
    assert (
        ours[1]
        == theirs[1]
        == {
            "traceparent": "00-ab  -01",
            "x-empty": "",
            "Content-Type": CONTENT_TYPE,
        }
    )


def test_the_installed_nats_py_takes_the_fast_path(harness: NatsHarness) -> None:
    """The internals the commands are handed to exist in the nats-py installed, so the
    publisher does not fall back to a publish per message (a slower relay, unnoticed)."""
    publisher = harness.publisher()
    assert publisher.publish([event("order-1", 1)]) == [None]
    connection = publisher._link.current
    assert connection is not None
    assert nats_adapter.can_send_raw(connection.client)


def test_a_message_nats_cannot_carry_is_refused_alone(harness: NatsHarness) -> None:
    """A header name with a colon and a wildcard routing key: each is that message's
    refusal, saying why; the messages around them are stored."""
    first, last = event("order-1", 1), event("order-2", 1)
    bad_header = replace(event("order-3", 1), headers={"bad:name": "x"})
    wildcard = replace(event("order-4", 1), routing_key="order.*")
    answers = harness.publisher().publish([first, bad_header, wildcard, last])
    assert answers[0] is None
    assert answers[3] is None
    assert "header name 'bad:name' cannot be sent to NATS" in (answers[1] or "")
    assert "without spaces, empty tokens or wildcards" in (answers[2] or "")
    assert [data for _, _, data in stored(harness, 2)] == [first.body, last.body]


def test_the_size_limit_counts_the_header_block_to_the_byte(nats_url: str) -> None:
    """A message whose header block and body make exactly the server's max_payload is
    stored; one byte more is refused before it is sent, naming the limit."""
    stream = unique("TIDINGS_TEST_")
    prefix = stream.lower()
    publisher = NatsPublisher(nats_url, stream=stream, subject_prefix=prefix)
    info: dict[str, Any] = {}

    async def delete(js: JetStreamContext) -> None:
        info["messages"] = (await js.stream_info(stream)).state.messages
        await js.delete_stream(stream)

    try:
        assert publisher.publish([event("order-0", 1)]) == [None]  # connects, makes the stream
        connection = publisher._link.current
        assert connection is not None
        limit = connection.client.max_payload
        head = len(Commands(prefix, CONTENT_TYPE).header_block({}, "id-exact"))

        def sized(message_id: str, size: int) -> OutgoingMessage:
            return OutgoingMessage(message_id, "order.placed", "order-1", b"x" * size)

        exact, over = sized("id-exact", limit - head), sized("id-overs", limit - head + 1)
        answers = publisher.publish([exact, over])
    finally:
        publisher.close()
        run_nats(nats_url, delete)
    assert answers[0] is None
    assert answers[1] == (
        f"message of {limit + 1} bytes (with headers) is larger than the NATS server's "
        f"max_payload of {limit} bytes"
    )
    assert info["messages"] == 2
