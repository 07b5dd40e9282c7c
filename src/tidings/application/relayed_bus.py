"""RelayedBus: a store with an outbox hands nothing to its bus, and says so once.

With ``connect(..., outbox=True)`` events reach the in-memory bus's handlers only through
a relay (``store.relay()``), at least once; the unit of work does not hand them on itself,
which would deliver them twice. Without a relay in the process, handlers subscribed with
``store.bus.subscribe`` never run, and nothing else would say so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from tidings.application.bus import InMemoryBus
from tidings.domain.events import DomainEvent

log = logging.getLogger(__name__)


class RelayedBus:
    """The publisher a store with an outbox gives its units of work: it hands nothing on,
    and at the first commit whose bus has subscribers, warns once if no relay in this
    process delivers to that bus."""

    def __init__(self, bus: InMemoryBus) -> None:
        self.bus = bus
        self._looked = False
        self._lock = threading.Lock()

    def publish(self, events: Sequence[DomainEvent]) -> list[object]:
        """Nothing to run here (a relay delivers ``events``); maybe warn, once."""
        if not self._looked and self.bus.has_subscribers:
            with self._lock:
                unrelayed = not self._looked and not self.bus.fed_by_relay
                self._looked = True
            if unrelayed:
                log.warning(
                    "this store has an outbox (connect(..., outbox=True)), so handlers "
                    "subscribed with store.bus.subscribe run only when a relay delivers "
                    "to this bus, and no relay in this process does: their events wait in "
                    "the outbox. Start one here with store.relay().start(), or move the "
                    "handlers behind a broker consumer (store.consumer(...))"
                )
        return []
