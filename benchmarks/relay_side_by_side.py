"""The relay's PostgreSQL -> NATS drain and nats-py's raw publish loop, round by round.

    python benchmarks/relay_side_by_side.py [--rounds 6] [--events 50000] [--aggregates N]

``relay.py`` measures the raw limits first and the relays after them; on a small machine
the raw publish moves by a quarter from one minute to the next, so a ratio across the
two halves of that run moves as much. Here each round publishes ``events`` messages with
nats-py's ``publish_async`` loop, then has the relay drain a backlog of as many events
from PostgreSQL into the same stream, and the round's ratio is taken from those two.
Not a test: nothing is asserted but that every event was published. Needs the local
PostgreSQL and NATS servers.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import raw_brokers
import relay
import relay_latency
import servers
from report import load

from tidings.adapters.nats import NatsPublisher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--aggregates", type=int, default=0, help="aggregates of the backlog (events/5 if 0)"
    )
    args = parser.parse_args()
    events, aggregates = args.events, args.aggregates or max(args.events // 5, 1)
    print(f"relay side by side, {events:,} events on {aggregates:,} aggregates ({load()})")
    rows = []
    with servers.pg_schema() as schema, servers.nats_stream() as place:
        store = relay_latency.open_store(servers.PG_URL, schema)
        publisher = NatsPublisher(servers.NATS, stream=place.stream, subject_prefix=place.prefix)
        try:
            for _ in range(args.rounds):
                publish = functools.partial(
                    raw_brokers.raw_nats_publish, place.prefix, raw_brokers.messages(events), False
                )
                raw = raw_brokers.rate(events, publish)
                relay.fill(store, relay.backlog(events, aggregates))
                drained = relay.drain(store, publisher, events)
                rows.append((raw, drained))
                print(f"  raw {raw:,.0f}, relay {drained:,.0f} messages/s ({load()})", flush=True)
        finally:
            publisher.close()
            store.close()
    print("\n| round | raw publish | relay | relay ÷ raw |\n|---:|---:|---:|---:|")
    for n, (raw, drained) in enumerate(rows, 1):
        print(f"| {n} | {raw:,.0f} | {drained:,.0f} | {drained / raw:.2f} |")
    raws, drains = [r for r, _ in rows], [d for _, d in rows]
    ratio = statistics.median(d / r for r, d in rows)
    print(
        f"| median | {statistics.median(raws):,.0f} | {statistics.median(drains):,.0f} | "
        f"{ratio:.2f} |"
    )


if __name__ == "__main__":
    main()
