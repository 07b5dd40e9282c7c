"""Reading the answers to a chain of waves (tidings.adapters.nats_chain.resolve)."""

from __future__ import annotations

from tidings.adapters.nats_chain import (
    WrongLast,
    expectation_headers,
    expectations,
    resolve,
    stored_sequence,
    tails,
)
from tidings.ports import OutgoingMessage


def message(aggregate: str, version: int) -> OutgoingMessage:
    return OutgoingMessage(f"{aggregate}-{version}", "order.placed", aggregate, b"{}")


# Three waves of three aggregates, flattened a1 b1 c1 a2 b2 c2 a3 b3 c3.
WAVES = [[message(a, v) for a in "abc"] for v in (1, 2, 3)]
NO_ANSWER = object()


def ids(waves: list[list[OutgoingMessage]]) -> list[list[str]]:
    return [[m.message_id for m in wave] for wave in waves]


def test_a_chain_stored_whole_is_confirmed_whole() -> None:
    resolved = resolve(WAVES, [None] * 9)
    assert (resolved.confirmed, resolved.rest, resolved.held) == (9, [], set())
    assert resolved.refusal is None
    assert resolved.unanswered_from is None


def test_a_refusal_holds_back_its_aggregate_and_the_rest_goes_wave_by_wave() -> None:
    """b2 refused: a1..a2 stored; c2 onwards were not (10070) and go again; b is held."""
    answers = [None, None, None, None, "too large", *[WrongLast("wrong last")] * 4]
    resolved = resolve(WAVES, answers)
    assert (resolved.confirmed, resolved.refusal, resolved.held) == (4, "too large", {"b"})
    assert not resolved.broken
    assert ids(resolved.rest) == [["c-2"], ["a-3", "b-3", "c-3"]]


def test_a_broken_chain_sends_the_rest_again_with_nothing_held() -> None:
    """Another publisher's message came in before c1: nothing from c1 on was stored."""
    answers = [None, None, *[WrongLast("wrong last")] * 7]
    resolved = resolve(WAVES, answers)
    assert (resolved.confirmed, resolved.refusal, resolved.held) == (2, None, set())
    assert resolved.broken
    assert ids(resolved.rest) == [["c-1"], ["a-2", "b-2", "c-2"], ["a-3", "b-3", "c-3"]]


def test_no_answer_leaves_the_rest_unanswered() -> None:
    resolved = resolve(WAVES, [None, None, NO_ANSWER, *[NO_ANSWER] * 6])
    assert (resolved.confirmed, resolved.unanswered_from, resolved.rest) == (2, 2, [])


def test_an_ack_after_an_unanswered_message_proves_nothing_about_it() -> None:
    """a2 may be a duplicate, acknowledged whatever it expected: c1 stays unanswered."""
    resolved = resolve(WAVES, [None, None, NO_ANSWER, None, *[NO_ANSWER] * 5])
    assert (resolved.confirmed, resolved.unanswered_from) == (2, 2)


def test_an_ack_after_a_broken_chain_proves_nothing_about_the_break() -> None:
    """b1 was a duplicate of a message stored earlier, so c1 (expecting b1) was not stored;
    a2, a duplicate too, is acknowledged: c1 and everything after it go again."""
    resolved = resolve(WAVES, [None, None, WrongLast("wrong last"), None, *[None] * 5])
    assert (resolved.confirmed, resolved.broken) == (2, True)
    assert ids(resolved.rest) == [["c-1"], ["a-2", "b-2", "c-2"], ["a-3", "b-3", "c-3"]]


def test_tails_keep_the_waves_from_a_message_on() -> None:
    assert ids(tails(WAVES, 0)) == ids(WAVES)
    assert ids(tails(WAVES, 3)) == ids(WAVES[1:])
    assert ids(tails(WAVES, 8)) == [["c-3"]]
    assert tails(WAVES, 9) == []


def test_each_message_of_a_chain_expects_the_one_before_it_and_one_more_sequence() -> None:
    flat = [m for wave in WAVES for m in wave][:3]
    assert expectations(flat, 41) == [(None, 41), ("a-1", 42), ("b-1", 43)]
    assert expectation_headers((None, 41)) == {"Nats-Expected-Last-Sequence": "41"}
    assert expectation_headers(("a-1", 42)) == {
        "Nats-Expected-Last-Msg-Id": "a-1",
        "Nats-Expected-Last-Sequence": "42",
    }
    assert expectation_headers(None) == {}


def test_only_a_fresh_store_tells_the_streams_last_sequence() -> None:
    """A duplicate's sequence is the one stored before; an error or nothing says none."""
    assert stored_sequence(b'{"stream":"S", "seq":42}') == 42
    assert stored_sequence(b'{"stream":"S", "seq":3,"duplicate": true}') is None
    assert stored_sequence(b'{"error":{"code":400,"err_code":10071}}') is None
    assert stored_sequence(b"") is None
    assert stored_sequence(b"not json") is None
    assert stored_sequence(b'{"seq": true}') is None
