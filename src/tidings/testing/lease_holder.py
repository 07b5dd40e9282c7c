"""A process that leases slots and then does nothing: the holder ``LeaseContract`` kills
(or stops) to see how fast its slots are taken over.

    python -m tidings.testing.lease_holder URL SCHEMA PREFIX OWNER SET COUNT TTL NOW

It prints the slots it holds (JSON, slot -> token) on one line, then waits for ever.
"""

from __future__ import annotations

import json
import sys
import threading

import tidings


def main(argv: list[str]) -> None:
    """Lease as told, say what was leased, wait to be killed."""
    url, schema, prefix, owner, name, count, ttl, now = argv
    store = tidings.connect(url, schema=schema, prefix=prefix, create_schema=False)
    assert store.leases is not None  # noqa: S101 - every connected store has leases
    held = store.leases.lease(owner, name, int(count), float(ttl), float(now))
    print(json.dumps(held), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
