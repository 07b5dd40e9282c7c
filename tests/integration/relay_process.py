"""A relay process for the fault-injection tests, which kill it with SIGKILL or stop it.

Usage: python relay_process.py CONFIG_JSON, where CONFIG_JSON holds ``db`` and ``schema``
(the PostgreSQL outbox), ``broker`` (its URL) and ``broker_options`` (for
``open_publisher``), ``relay_options`` (for ``store.relay``) and ``record``: a file to
which every confirmed message id is appended (flushed) as soon as the broker confirmed
it, or null. SIGTERM finishes the batch in hand and exits 0, as ``tidings relay`` does.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import IO

import tidings
from tidings.adapters.brokers import open_publisher
from tidings.ports import OutgoingMessage, Transport


class Recording:
    """A transport that writes down what its broker confirmed, then reports as usual."""

    def __init__(self, transport: Transport, sink: IO[str]) -> None:
        self.transport, self.sink = transport, sink

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Publish, then append the confirmed ids to the record."""
        results = self.transport.publish(messages)
        confirmed = [m.message_id for m, r in zip(messages, results, strict=True) if r is None]
        if confirmed:
            self.sink.write("".join(f"{message_id}\n" for message_id in confirmed))
            self.sink.flush()  # written before the batch is settled: a kill keeps it
        return results

    def close(self) -> None:
        """Close the broker connection."""
        self.transport.close()


def main() -> None:
    """Relay until SIGTERM (or a SIGKILL)."""
    config = json.loads(sys.argv[1])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    store = tidings.connect(config["db"], schema=config["schema"], outbox=True, source="faults")
    transport = open_publisher(config["broker"], **config["broker_options"])
    record = config.get("record")
    sink = open(record, "a", encoding="utf-8") if record else None  # noqa: SIM115 - closed below
    if sink is not None:
        transport = Recording(transport, sink)
    try:
        relay = store.relay(transport, **config["relay_options"])
        print("ready", flush=True)  # SIGTERM is handled from here on
        relay.run(stop)
        print(json.dumps({"published": relay.stats.published}), flush=True)
    finally:
        transport.close()
        store.close()
        if sink is not None:
            sink.close()


if __name__ == "__main__":
    main()
