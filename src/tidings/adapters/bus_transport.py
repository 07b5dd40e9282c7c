"""BusTransport: a relay's destination inside the process (levels 2 and 4).

The relay hands it the same CloudEvents a broker would get; it reads them back and runs
the in-memory bus's handlers. A handler that fails makes the message count as refused, so
the relay tries it again later with backoff: in-process handlers get at least once, like
a broker's consumers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tidings.application.bus import InMemoryBus
from tidings.application.causation import Cause, handling
from tidings.domain.events import DomainEvent
from tidings.errors import BadMessageError, SerializationError
from tidings.ports import OutgoingMessage
from tidings.records import EventRecord
from tidings.serialization.cloudevents import from_message


class BusTransport:
    """The ``Transport`` port onto an ``InMemoryBus``."""

    def __init__(self, bus: InMemoryBus, decode: Callable[[EventRecord], DomainEvent]) -> None:
        self.bus = bus
        self.decode = decode
        bus.fed_by_relay = True  # its handlers now run (see RelayedBus)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Run the handlers of each message; a failure is that message's refusal."""
        results: list[str | None] = []
        for message in messages:
            try:
                record = from_message(message.body)
                event = self.decode(record)
            except (BadMessageError, SerializationError) as exc:
                results.append(f"cannot be read back: {exc}")
                continue
            with handling(Cause.of(record.event_id, record.metadata)):
                failures = self.bus.publish([event])
            results.append("; ".join(str(f) for f in failures) or None)
        return results

    def close(self) -> None:
        """Nothing to release."""
