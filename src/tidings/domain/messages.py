"""Message: a command or an integration message, sent rather than recorded."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.domain.events import DomainEvent


@dataclass(frozen=True, kw_only=True)
class Message(DomainEvent):
    """Base of commands (``ChargePayment``, to another bounded context) and integration
    messages: a frozen dataclass whose own fields are the payload, like an event, but no
    aggregate's fact. ``uow.send(message, key=...)`` writes it to the outbox in the unit of
    work's transaction; a consumer's handlers receive it as they receive events.

    Its envelope is stamped when it is sent: ``aggregate_id`` is the ordering key the
    sender chose (messages of one key are delivered in the order sent), and
    ``aggregate_version`` its place among that key's messages.
    """
