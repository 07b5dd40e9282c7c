"""Takeover: how long a relay's lanes stay blocked after the relay holding them is killed.

Method: a writer commits one ``OrderPlaced`` per unit of work at a steady rate. Two relay
processes run on the outbox: the holder, which holds its only lane (``--lanes 1``: the
relay holding every lane), and a standby, whose fair share is none while the holder
lives (shares go by name, and every new relay is named after the ones before it). Each
relay stamps every message it publishes (``time.perf_counter``: CLOCK_MONOTONIC, one
clock for every process of the machine) into a file of its own, instead of sending it to
a broker: the broker is not what is measured. A round SIGKILLs the holder at a random
moment, and measures the time from the kill to the standby's first publish; then a new
standby starts and, once its heartbeat is in, the next round kills the new holder.

Two modes, in the same run: ``liveness`` (the leases' liveness locks: a PostgreSQL
session advisory lock, or a file lock beside the SQLite database) and ``lease only``
(the same relays without liveness locks: the standby waits for the lease to run out,
``--ttl`` seconds, as every takeover did before the locks). The ratio of their medians
is the gain; the target is a median of at most a second with liveness locks.

    python benchmarks/takeover.py [--db postgresql|sqlite] [--kills 20] [--slow-kills 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import servers
from relay_latency import open_store, write_steadily
from report import load, percentile, table

import tidings
from tidings.adapters.lease_liveness import NoLiveness
from tidings.adapters.sql_leases import SqlLeases
from tidings.ports import OutgoingMessage
from tidings.workers.relay import Relay

RATE = 200.0  # events per second from the writer


class StampTransport:
    """A transport that takes every message at once and stamps it in a file: when this
    process published it."""

    def __init__(self, path: Path) -> None:
        self.out = path.open("a", buffering=1)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Stamp each message; every one is confirmed."""
        self.out.write(f"{time.perf_counter()} {len(messages)}\n")
        return [None] * len(messages)

    def close(self) -> None:
        """Close the file."""
        self.out.close()


@dataclass(frozen=True)
class Run:
    """Where the relays of one mode work, and how."""

    url: str
    schema: str
    folder: Path  # each relay's stamps and output
    ttl: float
    lease_only: bool

    def arguments(self) -> list[str]:
        """This run as a relay process's arguments."""
        only = "1" if self.lease_only else "0"
        return [self.url, self.schema, str(self.folder), str(self.ttl), only]

    @classmethod
    def of(cls, arguments: Sequence[str]) -> Run:
        """The run a relay process was given."""
        url, schema, folder, ttl, only = arguments
        return cls(url, schema, Path(folder), float(ttl), only == "1")


def relay_main(run: Run, name: str) -> None:
    """One relay process: publish to the stamp file until killed or SIGTERMed."""
    store = open_store(run.url, run.schema)
    leases = store.leases
    if run.lease_only:
        database = store.database
        leases = SqlLeases(
            database.tables,  # type: ignore[attr-defined]
            dialect=database.dialect,
            transaction=database.transaction,
            liveness=NoLiveness(),
        )
    assert store.outbox is not None
    assert leases is not None
    relay = Relay(
        store.outbox,
        leases,
        StampTransport(run.folder / name),
        store.encode,
        relay_id=name,
        lanes=1,
        lease_ttl=run.ttl,
        messages=store.messages,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    relay.run(stop)


def start_relay(run: Run, name: str) -> subprocess.Popen[bytes]:
    """A relay process named ``name``; its stamps go to the run's folder."""
    with (run.folder / f"{name}.log").open("ab") as output:
        return subprocess.Popen(  # noqa: S603 - this script, arguments built here
            [sys.executable, __file__, "relay", name, *run.arguments()], stderr=output
        )


def first_stamp_after(path: Path, moment: float) -> float | None:
    """The first publish stamped in ``path`` after ``moment``, if any yet."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        stamp = float(line.split()[0])
        if stamp > moment:
            return stamp
    return None


def alive_in_leases(store: tidings.Store, name: str) -> bool:
    """Whether relay ``name`` has leased once (its heartbeat is in)."""
    table = store.database.tables["lease_owners"]  # type: ignore[attr-defined]
    mark = "%s" if store.database.dialect == "postgresql" else "?"
    rows = store.database.query(f"SELECT 1 FROM {table} WHERE owner = {mark}", (name,))  # type: ignore[attr-defined]
    return bool(rows)


def measure(run: Run, kills: int) -> list[float]:
    """Seconds from each kill of the holder to the standby's first publish."""
    store = open_store(run.url, run.schema)
    mode = "lease" if run.lease_only else "lock"
    names = iter(f"relay-{mode}-{n:04d}" for n in range(kills + 2))
    stop = threading.Event()
    writer = threading.Thread(target=write_steadily, args=(store, RATE, 1 << 40, stop), daemon=True)
    writer.start()
    rng = random.Random(kills)
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    times: list[float] = []
    try:
        for _ in range(2):  # the holder first, then the standby
            name = next(names)
            running.append((name, start_relay(run, name)))
            while not alive_in_leases(store, name):
                time.sleep(0.01)
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 1.5))  # the standby has leased a few times
            (_, holder), (standby, _) = running[0], running[1]
            killed_at = time.perf_counter()
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
            while (published := first_stamp_after(run.folder / standby, killed_at)) is None:
                time.sleep(0.005)
            times.append(published - killed_at)
            running.pop(0)
            name = next(names)
            running.append((name, start_relay(run, name)))
            while not alive_in_leases(store, name):
                time.sleep(0.01)
    finally:
        stop.set()
        writer.join()
        for _, process in running:
            process.terminate()
            process.wait()
        store.close()
    return times


def main() -> None:
    """Measure both modes and print the figures, the ratio and the load."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--kills", type=int, default=20, help="kills with liveness locks")
    parser.add_argument("--slow-kills", type=int, default=3, help="kills with the lease only")
    parser.add_argument("--ttl", type=float, default=15.0, help="the relays' lease_ttl")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.db == "postgresql":
            schema, url = stack.enter_context(servers.pg_schema()), servers.PG_URL
        else:
            schema, url = "public", stack.enter_context(servers.sqlite_file())
        folder = Path(tempfile.mkdtemp(prefix="tidings-takeover-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        results = {
            "liveness locks": measure(Run(url, schema, folder, args.ttl, False), args.kills),
            "lease only": measure(Run(url, schema, folder, args.ttl, True), args.slow_kills),
        }
    print(f"takeover after SIGKILL of the relay holding every lane ({args.db}, ttl {args.ttl} s)")
    rows = [
        [mode, str(len(times))]
        + [f"{v:.3f}" for v in (statistics.median(times), percentile(times, 99), max(times))]
        for mode, times in results.items()
    ]
    print(table(["mode", "kills", "p50 s", "p99 s", "max s"], rows))
    gain = statistics.median(results["lease only"]) / statistics.median(results["liveness locks"])
    print(f"median takeover, lease only / liveness locks: {gain:.1f}x ({load()})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        relay_main(Run.of(sys.argv[3:]), sys.argv[2])
    else:
        main()
