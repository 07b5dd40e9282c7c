"""Several waves published as one chain, and what to do with JetStream's answers.

A backlog on few aggregates goes out in waves, one message per aggregate each, because an
aggregate's next event may be sent only once its last one is stored: a refused event
must hold its aggregate's later events back. Sent wave by wave, each wave waits for a
round trip. Sent as a chain, every message of the call goes out at once, each with the
header ``Nats-Expected-Last-Msg-Id`` naming the message before it: JetStream stores a
message only if the stream's last message is that one. Once a message is refused (or
not stored for any reason), every later message of the chain is refused with error
10070 ("wrong last msg ID") and nothing after it is stored, so what the stream holds is
always a prefix of the chain, and each aggregate's order holds whatever the answers.

``resolve`` reads the answers: the stored prefix is confirmed; a refusal of the first
message after it is that message's own (its aggregate's later messages are held back);
a 10070 there means another publisher's message came in between (nothing of the rest
was stored); either way the rest goes out again wave by wave. A duplicate inside the
stream's window is acknowledged whatever it expected (JetStream checks for duplicates
first), so a chain sent again after a crash is confirmed as far as it was stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tidings.ports import OutgoingMessage

EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
WRONG_LAST_MSG_ID = 10070  # JetStream's err_code: the stream's last message is another


class WrongLast(str):
    """JetStream's answer that the message before this one in the chain is not the
    stream's last: this message was not stored, and says nothing about itself."""

    __slots__ = ()


@dataclass
class Resolved:
    """What a chain's answers come to."""

    confirmed: int = 0  # the chain's first messages, stored
    refusal: str | None = None  # the next message's own refusal, if it was refused
    unanswered_from: int | None = None  # JetStream stopped answering at this message
    rest: list[list[OutgoingMessage]] = field(default_factory=list)  # to send wave by wave
    held: set[str] = field(default_factory=set)  # aggregates whose later messages wait
    broken: bool = False  # another publisher's message came in between


def resolve(waves: Sequence[Sequence[OutgoingMessage]], answers: Sequence[object]) -> Resolved:
    """Read the answers to the chain of ``waves`` (flattened wave by wave), each None
    (stored), a ``str`` (refused; a ``WrongLast`` if only the chain was broken) or
    anything else (no answer)."""
    flat = [m for wave in waves for m in wave]
    # Everything up to the last stored message was stored too: each expected the one
    # before it.
    stored = max((i for i, a in enumerate(answers) if a is None), default=-1) + 1
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
