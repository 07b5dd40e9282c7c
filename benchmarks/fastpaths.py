"""Instructions per call of the per-event fast paths, counted by callgrind.

    python benchmarks/fastpaths.py [CASE ...]   # runs itself under valgrind and reports

Each case runs N times in one process and once more with N=0; the difference over N is
what one call costs, interpreter start-up and imports cancelled out. Instruction counts
do not depend on the machine's load, so two versions of the code compare exactly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from tidings.domain.aggregate import Aggregate
from tidings.domain.event_sourced import EventSourcedAggregate
from tidings.domain.events import DomainEvent
from tidings.records import FreshRecords, new_record, place_all
from tidings.serialization.codec import JsonCodec
from tidings.serialization.registry import EventRegistry

N = 20_000
WHEN = datetime(2025, 1, 15, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Deposited(DomainEvent):
    account: str
    amount: int


def record_events(n: int) -> None:
    """One event recorded on an aggregate (stamping included), n times."""
    account = Aggregate("a-1", clock=lambda: WHEN, ids=lambda: "e-1")
    event = Deposited(account="a-1", amount=5)
    record = account.record
    for _ in range(n):
        record(event)


def stamp_records(n: int) -> None:
    """One stored record built and given its global position, n times."""
    records = FreshRecords(
        new_record("e-1", "a-1", i, "Deposited", 1, WHEN, b"{}", b"{}", 0) for i in range(n)
    )
    place_all(records, range(1, n + 1))


class Account(EventSourcedAggregate):
    """An event-sourced aggregate whose one applier does nothing."""

    def _deposited(self, event: Deposited) -> None:
        pass

    appliers: ClassVar[Mapping[type[DomainEvent], Any]] = {Deposited: _deposited}


def record_sourced(n: int) -> None:
    """One event recorded on an event-sourced aggregate (stamped and applied), n times."""
    account = Account("a-1", clock=lambda: WHEN, ids=lambda: "e-1")
    event = Deposited(account="a-1", amount=5)
    record = account.record
    for _ in range(n):
        record(event)


def decode_records(n: int) -> None:
    """One stored record decoded into its event (envelope set in place), n times."""
    codec = JsonCodec(EventRegistry([Deposited]))
    stored = new_record(
        "e-1", "a-1", 1, "Deposited", 1, WHEN, b'{"account":"a-1","amount":5}', b"{}", 7
    )
    decode = codec.decode
    for _ in range(n):
        decode(stored)


SHOP_BODY = (
    b'{"specversion":"1.0","id":"01a251c3-1d34-72ea-8e01-cf6a1fbabb71","source":"shop",'
    b'"type":"OrderPlaced","subject":"order-0","time":"2026-12-07T18:27:51.220335Z",'
    b'"datacontenttype":"application/json","schemaversion":1,"aggregateversion":1,'
    b'"correlationid":"01a251c3-1d34-72ea-8e01-cf6a1fbabb70","traceparent":'
    b'"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":{"customer_id":'
    b'"alice@example.com","total_cents":3900,"lines":[{"sku":"sku-0","quantity":1,'
    b'"unit_price_cents":3900}]}}'
)


def read_messages(n: int) -> None:
    """One CloudEvent of the shop read into its record (``from_message``), n times."""
    from tidings.serialization.cloudevents import from_message

    for _ in range(n):
        from_message(SHOP_BODY)


def consume_messages(n: int) -> None:
    """One message through a consumer with the inbox, in batches of 500, on the
    in-memory store and broker, its handler doing nothing: the consumer's own work per
    message (read, hold check, inbox, unit of work, cause, settle), n times. Making the
    n message bodies (a replace each) is counted too, a small part."""
    import tidings
    from tidings.adapters.memory_broker import MemoryQueue, MemorySubscription
    from tidings.application.handling import Handlers
    from tidings.examples.shop.orders import SHOP_EVENTS, OrderPlaced
    from tidings.ports import OutgoingMessage

    store = tidings.connect("memory://", registry=EventRegistry(SHOP_EVENTS))
    handlers = Handlers()
    handlers.add(OrderPlaced, "nothing", lambda event, uow: None)
    queue = MemoryQueue()
    template = SHOP_BODY.replace(b'"subject":"order-0"', b'"subject":"order-%d"')
    template = template.replace(b"cf6a1fbabb71", b"%012d")
    queue.put(
        [OutgoingMessage(str(i), "order.placed", f"order-{i}", template % (i, i)) for i in range(n)]
    )
    consumer = store.consumer(MemorySubscription(queue), handlers, fetch_timeout=0)
    while consumer.run_once():
        pass
    assert consumer.stats.applied == n, consumer.stats


def encode_records(n: int) -> None:
    """One stored event encoded as the CloudEvent the relay publishes (``to_message``), its
    time zone as PostgreSQL hands it back, n times."""
    from zoneinfo import ZoneInfo

    from tidings.serialization.cloudevents import to_message

    when = datetime(2025, 1, 15, 9, 30, tzinfo=ZoneInfo("Etc/UTC"))
    data = b'{"customer_id":"alice@example.com","total_cents":3900,"lines":3}'
    record = new_record("evt-1", "order-1", 3, "order.placed", 1, when, data, b"{}", 17)
    for _ in range(n):
        to_message(record, "shop")


CASES = {
    "record": record_events,
    "stamp_record": stamp_records,
    "record_sourced": record_sourced,
    "decode": decode_records,
    "read": read_messages,
    "consume": consume_messages,
    "encode": encode_records,
}


VALGRIND = shutil.which("valgrind") or "valgrind (install it: apt-get install valgrind)"


def instructions(case: str, n: int) -> int:
    """Total instructions of one run of ``case`` with ``n`` calls, under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run = subprocess.run(  # noqa: S603 - valgrind on this script, arguments built here
            [
                VALGRIND,
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                *(["-S"] if sys.flags.no_site else []),  # to compare a checkout by PYTHONPATH
                __file__,
                "--run",
                case,
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        return int(re.findall(r"Collected : (\d+)", run.stderr)[-1])


def main() -> None:
    if sys.argv[1:2] == ["--run"]:  # one measured run, under valgrind
        CASES[sys.argv[2]](int(sys.argv[3]))
        return
    for case in sys.argv[1:] or CASES:
        per_call = (instructions(case, N) - instructions(case, 0)) / N
        print(f"{case:>14}: {per_call:8.0f} instructions per call")


if __name__ == "__main__":
    main()
