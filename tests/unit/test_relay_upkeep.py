"""The relay's own upkeep (lease renewals, releasing scheduled messages) stays off the path
between a commit waking it and the claim of the committed rows."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import tidings
from tidings.errors import BrokerUnavailableError, ServerUnavailableError
from tidings.ports import Outbox, OutboxEntry
from tidings.testing import RecordingTransport
from tidings.testing.contract import Counted, Counter, new_id
from tidings.workers.relay import Relay


class Calls:
    """The relay's calls in order, on a clock that only the relay's waits move."""

    def __init__(self, waits: int) -> None:
        self.seen: list[str] = []
        self.now = 1_000.0
        self.waits_left = waits
        self.stop = threading.Event()


class WatchedOutbox:
    """An outbox that notes claims and waits; a commit lands near the end of every wait
    (which the relay makes no longer than until its next renewal) and wakes the relay."""

    def __init__(self, inner: Outbox, calls: Calls, store: tidings.Store) -> None:
        self._inner, self._calls, self._store = inner, calls, store

    def claim(self, *args: Any, **kwargs: Any) -> list[OutboxEntry]:
        """The real claim, noted."""
        self._calls.seen.append("claim")
        return self._inner.claim(*args, **kwargs)

    def wait_for_work(self, timeout: float) -> None:
        """A commit lands and wakes the relay just before the wait would run out."""
        self._calls.seen.append("wait")
        self._calls.now += 0.95 * timeout
        self._calls.waits_left -= 1
        if self._calls.waits_left == 0:
            self._calls.stop.set()
        counter = Counter(new_id())
        counter.increment(1)
        with self._store.unit_of_work() as uow:
            uow.track(counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def noted(calls: Calls, name: str, method: Any) -> Any:
    """``method``, noting each call as ``name``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        calls.seen.append(name)
        return method(*args, **kwargs)

    return call


def test_a_woken_relay_claims_before_it_renews_its_leases_or_releases_messages() -> None:
    """Every wake-up is followed by the claim; renewals and releases come after the
    publish, before the next wait (a renewal due within the wait is made before it)."""
    store = tidings.connect("memory://", outbox=True, registry=tidings.EventRegistry([Counted]))
    calls = Calls(waits=30)  # about 14 s: renewals (every 0.5 s) fall due during waits
    assert store.outbox is not None
    assert store.leases is not None
    assert store.messages is not None
    leases, messages = store.leases, store.messages
    leases.lease = noted(calls, "lease", leases.lease)  # type: ignore[method-assign]
    messages.release_due = noted(calls, "release", messages.release_due)  # type: ignore[method-assign]
    transport = RecordingTransport()
    relay = Relay(
        WatchedOutbox(store.outbox, calls, store),  # type: ignore[arg-type]
        leases,
        transport,
        store.encode,
        messages=messages,
        clock=lambda: calls.now,
        lease_ttl=15.0,
    )
    relay.run(calls.stop)
    woken = calls.seen[calls.seen.index("wait") :]
    after_waits = [woken[i + 1] for i, call in enumerate(woken[:-1]) if call == "wait"]
    assert after_waits == ["claim"] * 29, calls.seen
    assert woken.count("lease") >= 2, calls.seen
    assert woken.count("release") >= 20, calls.seen
    assert len(transport.confirmed) == 29  # the last commit lands as the relay stops


class FailingOutbox:
    """An outbox whose claim fails with ``error`` and then stops the relay."""

    def __init__(self, inner: Outbox, error: Exception, stop: threading.Event) -> None:
        self._inner, self._error, self._stop = inner, error, stop

    def claim(self, *args: Any, **kwargs: Any) -> list[OutboxEntry]:
        """Fail the way the outage does, and ask the relay to stop (as SIGTERM does)."""
        self._stop.set()
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize(
    ("error", "released"),
    [
        pytest.param(ServerUnavailableError("cannot reach the database"), False, id="database"),
        pytest.param(BrokerUnavailableError("cannot reach the broker"), True, id="broker"),
    ],
)
def test_a_relay_stopped_on_a_database_outage_does_not_ask_the_database_to_release(
    error: Exception, released: bool
) -> None:
    """Stopped while paused on a database outage, the relay leaves its lanes to the
    liveness lock and their lease (asking would wait for the pool's connect timeout);
    paused on a broker outage, it releases them as usual."""
    store = tidings.connect("memory://", outbox=True, registry=tidings.EventRegistry([Counted]))
    assert store.outbox is not None
    assert store.leases is not None
    stop = threading.Event()
    calls = Calls(waits=0)
    leases = store.leases
    leases.release = noted(calls, "release lanes", leases.release)  # type: ignore[method-assign]
    relay = Relay(
        FailingOutbox(store.outbox, error, stop), leases, RecordingTransport(), store.encode
    )  # type: ignore[arg-type]
    relay.run(stop)
    assert relay.stats.outage
    assert ("release lanes" in calls.seen) is released
