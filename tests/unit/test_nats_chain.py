"""Reading the answers to a chain of waves (tidings.adapters.nats_chain.resolve)."""

from __future__ import annotations

from tidings.adapters.nats_chain import WrongLast, resolve, tails
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


def test_a_message_stored_after_one_without_an_answer_proves_that_one_stored() -> None:
    """c1's ack was lost, a2 was stored expecting c1: c1 is in the stream too."""
    resolved = resolve(WAVES, [None, None, NO_ANSWER, None, *[NO_ANSWER] * 5])
    assert (resolved.confirmed, resolved.unanswered_from) == (4, 4)


def test_tails_keep_the_waves_from_a_message_on() -> None:
    assert ids(tails(WAVES, 0)) == ids(WAVES)
    assert ids(tails(WAVES, 3)) == ids(WAVES[1:])
    assert ids(tails(WAVES, 8)) == [["c-3"]]
    assert tails(WAVES, 9) == []
