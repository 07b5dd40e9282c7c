"""Partitioned consumers: N processes share the P partitions of a stream through leases.

A relay started with ``--partitions P`` publishes each event into the partition of its
aggregate (``application.partitions``), where one queue (RabbitMQ) or durable consumer
(NATS) per partition holds it. Each process runs a ``PartitionedConsumer``: it leases its
fair share of the P partitions (the lease set ``consumer:<name>``, the relays' lanes'
component), and runs one ``Consumer`` per partition it holds, each on a thread of its
own, recording what it fetched under ``<name>.<partition>``. Every handling transaction
first checks, with ``holds``, that the partition is still this process's under its
fencing token, so a process that lost a partition (stalled past its lease) commits
nothing of it; the partition's new owner gets those messages again, and the records of
what was fetched keep each aggregate's events in order across the change.

A new process takes its share as the others give theirs back at their next lease; a
stopped one gives its share back at once; a killed one's share is taken over at the
others' next lease through its liveness lock (``adapters.lease_liveness``), or after
``ttl`` if it hangs without dying.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from tidings.application.partitions import check_header, check_partitions
from tidings.errors import ConfigurationError, StorageError
from tidings.ports import IncomingMessage, Leases, Subscription, Transaction, renew_interval
from tidings.workers.consumer import Consumer, ConsumerStats
from tidings.workers.passes import Background
from tidings.workers.relay import new_relay_id

log = logging.getLogger("tidings.consumer")

Fence = Callable[[Transaction], None]
MakeConsumer = Callable[[int, Fence], Consumer]
STOP_CHECK = 0.1  # seconds between looks at the stop event and the partitions' news


def lease_set(name: str) -> str:
    """The lease set of the partitions of the consumer ``name``."""
    return f"consumer:{name}"


def partition_name(name: str, partition: int) -> str:
    """The name a partition's consumer records what it fetched under."""
    return f"{name}.{partition}"


class PartitionLostError(Exception):
    """A handling transaction found its partition taken over: nothing of it committed."""


class CheckedSubscription:
    """A partition's subscription that refuses messages published for another count of
    partitions (``ConfigurationError``), handing the batch back first."""

    def __init__(self, subscription: Subscription, partitions: int) -> None:
        self.subscription, self.partitions = subscription, partitions

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Fetch, and check each message's count of partitions."""
        messages = self.subscription.fetch(max_messages, timeout)
        try:
            for message in messages:
                check_header(message.headers, self.partitions)
        except ConfigurationError:
            self.subscription.give_back(messages)
            raise
        return messages

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """As the subscription's."""
        self.subscription.ack(messages)

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """As the subscription's."""
        self.subscription.retry_later(message, delay)

    def give_back(self, messages: Sequence[IncomingMessage]) -> None:
        """As the subscription's."""
        self.subscription.give_back(messages)

    def close(self) -> None:
        """As the subscription's."""
        self.subscription.close()


@dataclass
class _Running:
    """A partition this process holds, its consumer and the thread that runs it."""

    token: int
    consumer: Consumer
    stop: threading.Event
    thread: threading.Thread


class PartitionedConsumer(Background):
    """One process's share of a partitioned consumer ``name`` with ``partitions`` parts.

    ``make_consumer(partition, fence)`` builds the ``Consumer`` of one partition around
    its own subscription; ``fence`` must run in each of its handling transactions (the
    store's ``partitioned_consumer`` does it all). Every process of one ``name`` must be
    given the same ``partitions``: another count is refused (``LeaseCountError``) while
    live processes hold the set.
    """

    def __init__(
        self,
        make_consumer: MakeConsumer,
        leases: Leases,
        *,
        name: str,
        partitions: int,
        ttl: float = 15.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl > 0:
            raise ConfigurationError(f"ttl must be above 0 seconds (got {ttl!r})")
        self.partitions = check_partitions(partitions)
        self.name, self.ttl, self.clock = name, float(ttl), clock
        self.owner = owner or new_relay_id()
        self._make, self._leases = make_consumer, leases
        self._running: dict[int, _Running] = {}
        self._done = ConsumerStats()  # of partitions given up
        self._wake = threading.Event()
        self._fatal: BaseException | None = None
        self._stop = threading.Event()
        self._thread = None
        self.lost_partitions = 0

    @property
    def held(self) -> list[int]:
        """The partitions this process runs now."""
        return sorted(self._running)

    @property
    def stats(self) -> ConsumerStats:
        """What every partition's consumer in this process has done, added up."""
        total = ConsumerStats(started_at=self._done.started_at)
        for stats in [self._done, *(r.consumer.stats for r in list(self._running.values()))]:
            _add(total, stats)
        return total

    def rebalance(self) -> list[int]:
        """Lease this process's share, start the partitions gained, stop those lost;
        return the partitions held."""
        held = self._leases.lease(
            self.owner, lease_set(self.name), self.partitions, self.ttl, self.clock()
        )
        gone = [p for p, r in self._running.items() if held.get(p) != r.token]
        self._retire(gone)
        for partition, token in sorted(held.items()):
            if partition not in self._running:
                self._start(partition, token)
        return self.held

    def _start(self, partition: int, token: int) -> None:
        tokens = {partition: token}
        owner, leased = self.owner, lease_set(self.name)

        def fence(tx: Transaction) -> None:
            if not self._leases.holds(tx, owner, leased, tokens):
                raise PartitionLostError(f"partition {partition} of {self.name} was taken over")

        consumer = self._make(partition, fence)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._work,
            args=(partition, consumer, stop),
            name=f"consumer-{partition_name(self.name, partition)}",
            daemon=True,
        )
        self._running[partition] = _Running(token, consumer, stop, thread)
        thread.start()
        log.info("consumer %s: took partition %d (token %d)", self.name, partition, token)

    def _work(self, partition: int, consumer: Consumer, stop: threading.Event) -> None:
        """Run one partition's consumer until told to stop or it lost the partition."""
        try:
            consumer.run(stop)
        except PartitionLostError:
            self.lost_partitions += 1
            log.warning("consumer %s: partition %d was taken over", self.name, partition)
        except BaseException as exc:  # a fatal error of one partition stops the process
            self._fatal = exc
        stop.set()
        self._wake.set()  # lease again now: the partition is gone or the process stops

    def _retire(self, partitions: Sequence[int]) -> None:
        """Stop the consumers of ``partitions`` (each finishes its batch) and close their
        subscriptions, which hand what they had fetched back to the broker."""
        retired = [self._running.pop(p) for p in partitions]
        for running in retired:
            running.stop.set()
        for running in retired:
            running.thread.join()
            running.consumer.subscription.close()
            _add(self._done, running.consumer.stats)

    def run(self, stop: threading.Event | None = None) -> None:
        """Lease and rebalance every ``renew_interval(ttl)`` (at once when a partition was
        lost) until ``stop`` is set; then stop every partition and give them back. A
        partition's fatal error (a wrong count of partitions, say) is raised here."""
        stop = stop or self._stop
        renew_at = 0.0
        try:
            while not stop.is_set() and self._fatal is None:
                if self._wake.is_set() or time.monotonic() >= renew_at:
                    self._wake.clear()
                    renew_at = time.monotonic() + renew_interval(self.ttl)
                    try:
                        self.rebalance()
                    except StorageError as exc:  # the fences keep a lapsed lease harmless
                        log.warning("consumer %s could not lease: %s", self.name, exc)
                self._wake.wait(STOP_CHECK)
        finally:
            self.release()
        if self._fatal is not None:
            raise self._fatal

    def release(self) -> None:
        """Stop every partition's consumer and give the partitions back at once."""
        self._retire(list(self._running))
        try:
            self._leases.release(self.owner, lease_set(self.name))
        except StorageError as exc:
            log.warning("consumer %s could not release its partitions: %s", self.name, exc)


def _add(total: ConsumerStats, stats: ConsumerStats) -> None:
    """Add the counts of ``stats`` to ``total``; keep the latest error."""
    for f in fields(ConsumerStats):
        value = getattr(stats, f.name)
        if isinstance(value, int):
            setattr(total, f.name, getattr(total, f.name) + value)
    total.last_error = stats.last_error or total.last_error
