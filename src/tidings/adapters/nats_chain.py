"""Several waves published as one chain, and what to do with JetStream's answers.

A backlog on few aggregates goes out in waves, one message per aggregate each, because an
aggregate's next event may be sent only once its last one is stored: a refused event
must hold its aggregate's later events back. Sent wave by wave, each wave waits for a
round trip. Sent as a chain, every message of the call goes out at once, each saying
what it expects the stream's last message to be: ``Nats-Expected-Last-Sequence`` (the
stream's last sequence when the chain started, plus the messages before it) and, after
the first, ``Nats-Expected-Last-Msg-Id`` (the message before it). JetStream stores a
message only if both hold. Once one message is not stored (refused, or a duplicate,
which JetStream acknowledges but does not store again), the stream's sequence falls
behind what every later message expects, and none of them is stored: what the stream
gains from a chain is always its head, in order. The message id alone would not do: a
duplicate of the stream's last message, later in the chain, makes the next message's
expectation true again, and that message would be stored ahead of an earlier event of
its aggregate that was not. The sequence alone would not either: another publisher's
messages can bring the stream's sequence up to what a later message expects.

A chain starts only where the publisher knows the stream's last sequence: from the ack
of its own last message, if JetStream stored it then (an ack for a duplicate carries the
sequence stored before). Another publisher's message since then breaks the chain's
first link, which costs a resend, nothing else.

``resolve`` reads the answers: the acknowledged head of the chain is confirmed; a
refusal of the first message after it is that message's own (its aggregate's later
messages are held back); an unmet expectation there (10070, 10071) means the message
before it was a duplicate or another publisher's message came in between: nothing of
the rest was stored but duplicates. Either way the rest goes out again wave by wave. No
answer leaves the rest unanswered, to be sent again after a pause. An acknowledgement
after a message that was not acknowledged proves nothing about that message (it may be
a duplicate's), and is not taken to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from tidings.ports import OutgoingMessage

EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
# JetStream's err_codes for a message whose expectation failed: the stream's last message
# is another (10070), its last sequence is another (10071).
CHAIN_BROKEN = frozenset({10070, 10071})

Expected = tuple[str | None, int]
"""What a message of a chain expects: the id of the stream's last message (None for the
chain's first) and the stream's last sequence."""


def expectations(messages: Sequence[OutgoingMessage], base: int) -> list[Expected]:
    """The chain of ``messages`` on a stream whose last sequence is ``base``: message i
    expects message i-1 to be the last, at sequence ``base + i``."""
    return [(messages[i - 1].message_id if i else None, base + i) for i in range(len(messages))]


def expectation_headers(expected: Expected | None) -> dict[str, str]:
    """The headers that say ``expected`` (none for a message outside a chain)."""
    if expected is None:
        return {}
    last_id, sequence = expected
    headers = {EXPECTED_LAST_MSG_ID: last_id} if last_id is not None else {}
    headers[EXPECTED_LAST_SEQUENCE] = str(sequence)
    return headers


def stored_sequence(ack: bytes) -> int | None:
    """The sequence JetStream stored a message at, from its ack; None for anything else
    (an error, a duplicate, which was stored before at a sequence of its own, no ack)."""
    if not ack or b'"error"' in ack or b'"duplicate"' in ack:
        return None
    try:
        sequence = json.loads(ack).get("seq")
    except (ValueError, AttributeError):
        return None
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None


class WrongLast(str):
    """JetStream's answer that what this message expected of the stream's last message
    (its id or its sequence) did not hold: it was not stored, which says nothing about
    the message itself."""

    __slots__ = ()


@dataclass
class Resolved:
    """What a chain's answers come to."""

    confirmed: int = 0  # the chain's first messages, stored
    refusal: str | None = None  # the next message's own refusal, if it was refused
    unanswered_from: int | None = None  # JetStream stopped answering at this message
    rest: list[list[OutgoingMessage]] = field(default_factory=list)  # to send wave by wave
    held: set[str] = field(default_factory=set)  # aggregates whose later messages wait
    broken: bool = False  # an expectation failed: a duplicate or another publisher's message


def resolve(waves: Sequence[Sequence[OutgoingMessage]], answers: Sequence[object]) -> Resolved:
    """Read the answers to the chain of ``waves`` (flattened wave by wave), each None
    (stored), a ``str`` (refused; a ``WrongLast`` if only the chain was broken) or
    anything else (no answer)."""
    flat = [m for wave in waves for m in wave]
    # The acknowledged head of the chain. An acknowledgement further on proves nothing
    # about the messages before it: a duplicate is acknowledged whatever it expected.
    stored = next((i for i, a in enumerate(answers) if a is not None), len(flat))
    if stored == len(flat):
        return Resolved(confirmed=stored)
    first = answers[stored]
    if not isinstance(first, str):
        return Resolved(confirmed=stored, unanswered_from=stored)
    if isinstance(first, WrongLast):
        return Resolved(confirmed=stored, rest=tails(waves, stored), broken=True)
    return Resolved(
        confirmed=stored,
        refusal=first,
        rest=tails(waves, stored + 1),
        held={flat[stored].ordering_key},
    )


def tails(waves: Sequence[Sequence[OutgoingMessage]], start: int) -> list[list[OutgoingMessage]]:
    """The waves from flattened message ``start`` on (the empty ones left out)."""
    rest: list[list[OutgoingMessage]] = []
    index = 0
    for wave in waves:
        kept = list(wave[max(0, start - index) :])
        index += len(wave)
        if kept:
            rest.append(kept)
    return rest
