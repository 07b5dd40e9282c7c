"""Commands and integration messages a unit of work sends: written to the outbox (or
scheduled) in its transaction, so they leave only if it commits, at least once, in the
order sent per key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tidings.domain.events import DomainEvent
from tidings.domain.ids import utc_now, uuid7
from tidings.errors import ConfigurationError
from tidings.ports import EventWriter, Messages, Transaction
from tidings.serialization.cloudevents import MAX_KEY_CHARACTERS
from tidings.serialization.codec import JsonCodec


@dataclass(frozen=True)
class _Sending:
    message: DomainEvent
    key: str
    due: float | None  # seconds since the epoch; None: at once


class Outgoing:
    """The messages of one unit of work, until it writes them."""

    def __init__(self, messages: Messages | None, writers: Sequence[EventWriter]) -> None:
        self._messages, self._writers = messages, writers
        self._pending: list[_Sending] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(
        self,
        message: DomainEvent,
        key: str | None,
        deliver_at: datetime | None,
        delay: float | timedelta | None,
    ) -> None:
        """Check and keep one message (see ``UnitOfWork.send``)."""
        if message.is_stamped():
            raise ConfigurationError(
                f"{type(message).__name__} {message.event_id} was sent or recorded already: "
                "build a new message for each send"
            )
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARACTERS:
            raise ConfigurationError(
                f"a message key must be 1 to {MAX_KEY_CHARACTERS} characters, not {len(key)}"
            )
        due = _due(deliver_at, delay)
        if due is not None and self._messages is None:
            raise ConfigurationError(
                "delayed delivery needs the outbox, where the message waits durably: "
                "connect with tidings.connect(url, outbox=True)"
            )
        self._pending.append(_Sending(message, key or uuid7(), due))

    def write(self, tx: Transaction, codec: JsonCodec, metadata: bytes) -> list[DomainEvent]:
        """Stamp the messages (ids, time, key and the key's next numbers) and write them
        in ``tx``: to the outbox, or scheduled; return them stamped, in the order sent."""
        counts: dict[str, int] = {}
        for sending in self._pending:
            counts[sending.key] = counts.get(sending.key, 0) + 1
        next_version = {
            key: self._messages.next_versions(tx, key, n) if self._messages else 1
            for key, n in counts.items()
        }
        now, stamped = utc_now(), []
        for sending in self._pending:
            stamped.append(
                sending.message.stamped(
                    event_id=uuid7(),
                    occurred_at=now,
                    aggregate_id=sending.key,
                    aggregate_version=next_version[sending.key],
                )
            )
            next_version[sending.key] += 1
        records = codec.encode_all(stamped, metadata, tx)
        at_once = [r for r, s in zip(records, self._pending, strict=True) if s.due is None]
        later = [(r, s.due) for r, s in zip(records, self._pending, strict=True) if s.due]
        if at_once:
            for writer in self._writers:
                writer.write(tx, at_once)
        if later and self._messages is not None:
            self._messages.schedule(tx, [r for r, _ in later], [due for _, due in later])
        return stamped


def _due(deliver_at: datetime | None, delay: float | timedelta | None) -> float | None:
    """The due time in seconds since the epoch, or None for at once."""
    if deliver_at is not None and delay is not None:
        raise ConfigurationError("give deliver_at or delay, not both")
    if deliver_at is not None:
        if deliver_at.tzinfo is None:
            raise ConfigurationError(
                f"deliver_at {deliver_at.isoformat()} has no time zone: give an aware "
                "datetime (datetime.now(UTC) + timedelta(...))"
            )
        return deliver_at.timestamp()
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ConfigurationError(f"delay must not be negative, not {seconds:g} s")
        return utc_now().timestamp() + seconds
    return None
