"""InMemoryBus: level 1 of the decision matrix, handlers in this process after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tidings.domain.events import DomainEvent

log = logging.getLogger(__name__)

E = TypeVar("E", bound=DomainEvent)
Handler = Callable[[E], None]


@dataclass(frozen=True)
class HandlerFailure:
    """A handler raised while handling an event; the commit and the other handlers stand."""

    event: DomainEvent
    handler: str
    error: BaseException

    def __str__(self) -> str:
        return (
            f"handler {self.handler!r} failed on {type(self.event).__name__} "
            f"{self.event.event_id}: {self.error!r}"
        )


class InMemoryBus:
    """Dispatch events to handlers subscribed by event class, in the order given.

    A handler subscribed to a base class (``DomainEvent`` itself, say) gets every
    subclass too. A handler that raises is logged with the event id and reported in the
    returned failures; it neither undoes the commit nor stops the handlers after it.
    The bus keeps nothing: an event whose handler failed is not retried (the outbox and
    inbox levels exist for that).
    """

    def __init__(self) -> None:
        self._handlers: dict[type[DomainEvent], list[tuple[int, str, Handler[DomainEvent]]]] = {}
        self._resolved: dict[type[DomainEvent], list[tuple[str, Handler[DomainEvent]]]] = {}
        self._subscriptions = 0
        self.fed_by_relay = False
        """True once a relay delivers to this bus (``BusTransport`` marks it): with an
        outbox, that is the only way its handlers run."""

    @property
    def has_subscribers(self) -> bool:
        """True once any handler is subscribed."""
        return bool(self._handlers)

    def subscribe(self, event_class: type[E], handler: Handler[E], name: str = "") -> None:
        """Call ``handler(event)`` for every published event of ``event_class``."""
        label = name or getattr(handler, "__qualname__", repr(handler))
        self._subscriptions += 1
        entry: tuple[int, str, Handler[DomainEvent]]
        entry = (self._subscriptions, label, handler)  # type: ignore[assignment]
        self._handlers.setdefault(event_class, []).append(entry)
        self._resolved.clear()

    def handlers_for(
        self, event_class: type[DomainEvent]
    ) -> list[tuple[str, Handler[DomainEvent]]]:
        """The (name, handler) pairs an event of ``event_class`` goes to, in subscription order."""
        found = self._resolved.get(event_class)
        if found is None:
            matching = sorted(
                entry for cls in event_class.__mro__ for entry in self._handlers.get(cls, ())
            )
            found = self._resolved[event_class] = [(name, fn) for _, name, fn in matching]
        return found

    def publish(self, events: Sequence[DomainEvent]) -> list[HandlerFailure]:
        """Run the handlers of each event, event by event; return the failures."""
        failures: list[HandlerFailure] = []
        kind: type[DomainEvent] | None = None
        handlers: list[tuple[str, Handler[DomainEvent]]] = []
        for event in events:
            if type(event) is not kind:  # a unit of work's events often share a class
                kind = type(event)
                handlers = self.handlers_for(kind)
            for name, handler in handlers:
                try:
                    handler(event)
                except Exception as exc:  # one failing handler must not stop the others
                    log.exception(
                        "handler %s failed on %s %s", name, type(event).__name__, event.event_id
                    )
                    failures.append(HandlerFailure(event, name, exc))
        return failures
