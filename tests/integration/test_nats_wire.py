"""The NATS publisher's own publish commands, against the real server: what the stream
stores is what nats-py's publish would have stored, a message is refused alone, the
server's size limit is checked on the exact header block, and several waves go out as a
chain that keeps each aggregate's order whatever JetStream answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from nats.js import JetStreamContext

import tidings.adapters.nats as nats_adapter
from tests.integration.brokers import (
    NatsHarness,
    cleaned_up,
    event,
    run_nats,
    silent_publisher,
    unique,
)
from tidings import BrokerBusyError
from tidings.adapters.nats import NatsPublisher
from tidings.adapters.nats_wire import Commands
from tidings.ports import HELD_BACK, OutgoingMessage
from tidings.serialization.cloudevents import CONTENT_TYPE

pytestmark = pytest.mark.nats


@pytest.fixture
def harness(nats_url: str) -> Iterator[NatsHarness]:
    """A unique stream, deleted afterwards."""
    yield from cleaned_up(NatsHarness(nats_url))


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


# -- several waves in one call go out as a chain (tidings.adapters.nats_chain) ----------


def waves_of(aggregates: int, depth: int) -> list[list[OutgoingMessage]]:
    """``depth`` waves of one event of each of ``aggregates`` aggregates."""
    return [[event(f"order-{a}", v) for a in range(aggregates)] for v in range(1, depth + 1)]


def stored_ids(harness: NatsHarness, count: int) -> list[str]:
    return [headers["Nats-Msg-Id"] for _, headers, _ in stored(harness, count)]


def primed(harness: NatsHarness) -> NatsPublisher:
    """A publisher that stored one message, so it knows the stream's last sequence (1):
    a chain starts from there."""
    publisher = harness.publisher()
    assert publisher.publish([event("order-first", 1)]) == [None]
    return publisher


@pytest.mark.parametrize("fast_path", [True, False])
def test_waves_go_out_as_one_chain_in_order(
    harness: NatsHarness, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    """Five waves of ten aggregates in one call: all confirmed, stored in the call's order,
    each message expecting the stream's last sequence, and each after the first the
    message before it (on nats-py's publish path too)."""
    if not fast_path:
        monkeypatch.setattr(nats_adapter, "can_send_raw", lambda client: False)
    publisher = primed(harness)
    waves = waves_of(10, 5)
    flat = [m for wave in waves for m in wave]
    assert publisher.publish_waves(waves) == [None] * 50
    found = stored(harness, 51)[1:]
    assert [headers["Nats-Msg-Id"] for _, headers, _ in found] == [m.message_id for m in flat]
    assert "Nats-Expected-Last-Msg-Id" not in found[0][1]
    assert [headers["Nats-Expected-Last-Msg-Id"] for _, headers, _ in found[1:]] == [
        m.message_id for m in flat[:-1]
    ]
    assert [h["Nats-Expected-Last-Sequence"] for _, h, _ in found] == [str(n) for n in range(1, 51)]


def test_a_publisher_that_knows_no_sequence_sends_wave_by_wave(harness: NatsHarness) -> None:
    """Before its first message is stored a publisher does not know where the stream
    ends: its first call goes wave by wave, expecting nothing."""
    assert harness.publisher().publish_waves(waves_of(2, 2)) == [None] * 4
    assert all("Nats-Expected-Last-Sequence" not in h for _, h, _ in stored(harness, 4))


def test_a_refusal_in_a_chain_holds_back_only_its_aggregate(harness: NatsHarness) -> None:
    """order-1's second event is refused (too large for the stream): its third is held
    back, not sent; every other event is stored, each aggregate in order."""
    publisher = primed(harness)
    waves = waves_of(3, 3)
    waves[1][1] = replace(harness.refused(), ordering_key="order-1")
    answers = publisher.publish_waves(waves)
    assert answers[:4] == [None] * 4
    assert isinstance(answers[4], str)
    assert "message size exceeds maximum allowed" in answers[4]
    assert answers[5:] == [None, None, HELD_BACK, None]
    expected = [m for w in waves for m in w if m.ordering_key != "order-1" or m is waves[0][1]]
    order = stored_ids(harness, 8)[1:]
    assert sorted(order) == sorted(m.message_id for m in expected)
    for aggregate in ("order-0", "order-2"):
        mine = [m.message_id for wave in waves for m in wave if m.ordering_key == aggregate]
        assert [i for i in order if i in mine] == mine


def test_a_broken_chain_is_sent_again_wave_by_wave(harness: NatsHarness) -> None:
    """A message of the chain already in the stream (a duplicate) adds no sequence, so
    the next one, expecting one more, is not stored (as when another publisher's message
    comes in between): the answer is still every message confirmed, each stored once, in
    order; and chains pause."""
    publisher = harness.publisher()
    earlier, last = event("order-9", 1), event("order-8", 1)
    assert publisher.publish([earlier, last]) == [None, None]
    waves = [[event("order-1", 1), earlier], [event("order-1", 2), event("order-2", 1)]]
    assert publisher.publish_waves(waves) == [None] * 4
    assert stored_ids(harness, 5) == [
        earlier.message_id,
        last.message_id,
        waves[0][0].message_id,
        waves[1][0].message_id,
        waves[1][1].message_id,
    ]
    # A broken chain says another publisher may write to the stream: the next calls go
    # wave by wave for a while, so its messages do not break (and double) each of them.
    assert publisher.publish_waves(waves_of(2, 2)) == [None] * 4
    assert all("Nats-Expected-Last-Sequence" not in h for _, h, _ in stored(harness, 9)[5:])


def test_a_duplicate_after_a_broken_link_does_not_confirm_the_message_before_it(
    harness: NatsHarness,
) -> None:
    """The chain [e1, x, e2], e1 and e2 stored before (e2 last): e1 is acknowledged as a
    duplicate, x is not stored, e2 is acknowledged as a duplicate whatever it expected.
    x goes again and is stored: the answer for x is one the stream keeps."""
    publisher = harness.publisher()
    e1, e2, x = event("order-1", 1), event("order-3", 1), event("order-2", 1)
    assert publisher.publish([e1, e2]) == [None, None]
    assert publisher.publish_waves([[e1, x], [e2]]) == [None, None, None]
    assert stored_ids(harness, 3) == [e1.message_id, e2.message_id, x.message_id]


def test_a_duplicate_that_is_the_streams_last_does_not_let_a_later_event_pass(
    harness: NatsHarness,
) -> None:
    """A chain sent again (after a stall or a crash) with a new event z1 among messages
    stored before: z1 is not stored (a duplicate before it added no sequence). Then e,
    the stream's last message, comes again as a duplicate; z2, expecting e, would pass
    an expectation on the message id alone and be stored ahead of z1. Expecting the
    sequence too, it is not: z1 and z2 go again wave by wave, in order."""
    publisher = harness.publisher()
    a, b, c, d, e = (event(f"order-{n}", 1) for n in "abcde")
    z1, z2 = event("order-z", 1), event("order-z", 2)
    assert publisher.publish([a, b, c, d, e]) == [None] * 5
    assert publisher.publish_waves([[a, b, c, z1], [d, e, z2]]) == [None] * 7
    assert stored_ids(harness, 7) == [m.message_id for m in (a, b, c, d, e, z1, z2)]


def test_chains_can_be_turned_off(harness: NatsHarness) -> None:
    """``chain_waves=False``: wave by wave, nothing expected."""
    publisher = NatsPublisher(
        harness.url, stream=harness.stream, subject_prefix=harness.prefix, chain_waves=False
    )
    try:
        assert publisher.publish_waves(waves_of(2, 2)) == [None] * 4
    finally:
        publisher.close()
    assert all("Nats-Expected-Last-Msg-Id" not in h for _, h, _ in stored(harness, 4))


def test_a_chain_left_unanswered_keeps_what_was_stored_and_says_why(nats_url: str) -> None:
    """The second message of a chain goes to a subject only a plain subscriber hears, so
    no ack comes for it: BrokerBusyError (an outage, not a refusal) naming the missing
    ack, with the first message confirmed and the rest left to send again."""
    silent = replace(event("order-2", 1), routing_key="silent.placed")
    waves = [[event("order-1", 1), silent], [event("order-1", 2), event("order-2", 2)]]
    with silent_publisher(nats_url, "chain") as publisher:
        assert publisher.publish([event("order-0", 1)]) == [None]  # the sequence is known
        with pytest.raises(BrokerBusyError, match=r"3 of 4 messages unanswered") as caught:
            publisher.publish_waves(waves)
    assert caught.value.answered == {0: None}
    assert "no acknowledgement within ack_timeout 0.3 s" in str(caught.value)


def test_two_publishers_chaining_into_one_stream_keep_every_aggregates_order(
    harness: NatsHarness,
) -> None:
    """Two publishers (two relays on other lanes) send chains of their own aggregates'
    events into one stream at the same time: each other's messages break their chains,
    and still every event is stored once, each aggregate in order."""
    publishers = [primed(harness), primed(harness)]
    calls = {
        name: [
            [[event(f"{name}-{a}", 5 * call + v) for a in range(5)] for v in range(1, 6)]
            for call in range(20)
        ]
        for name in ("left", "right")
    }
    start = threading.Barrier(2)
    answers: dict[str, list[object]] = {}

    def publish(name: str, publisher: NatsPublisher) -> None:
        start.wait(10)
        answers[name] = [a for waves in calls[name] for a in publisher.publish_waves(waves)]

    threads = [
        threading.Thread(target=publish, args=(name, publisher))
        for name, publisher in zip(calls, publishers, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {"left": [None] * 500, "right": [None] * 500}
    sent = {
        m.message_id: m for waves in (*calls["left"], *calls["right"]) for w in waves for m in w
    }
    order = [i for i in stored_ids(harness, 1002) if i in sent]
    assert sorted(order) == sorted(sent)  # each event once
    for aggregate in {m.ordering_key for m in sent.values()}:
        mine = [i for i in order if sent[i].ordering_key == aggregate]
        assert mine == [
            m.message_id
            for waves in calls[aggregate.split("-")[0]]
            for w in waves
            for m in w
            if m.ordering_key == aggregate
        ]
