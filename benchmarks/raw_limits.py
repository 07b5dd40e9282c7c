"""The raw limits under the relay, measured with the drivers alone (no tidings code).

- claiming 100 rows at a time with ``FOR UPDATE SKIP LOCKED`` and marking them published,
  one transaction per claim, by one worker and by two (psycopg 3);
- LISTEN/NOTIFY wake-up: from sending ``NOTIFY`` (its own transaction) to a thread
  blocked on the listening connection waking up;
- broker publishes: ``raw_brokers.py`` has them (nats-py async acks, aio-pika confirms).
"""

from __future__ import annotations

import statistics
import threading
import time

import psycopg

CLAIM_BATCH = 100


def claim_rate(url: str, outbox: str, rows: int, workers: int) -> float:
    """Rows/s that ``workers`` threads claim and mark, 100 at a time, until none is left."""
    done = [0] * workers

    def work(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                with conn.transaction():
                    claimed = conn.execute(
                        f"SELECT position, event_id, aggregate_id, payload::text FROM {outbox} "
                        "WHERE published = FALSE ORDER BY position LIMIT %s "
                        "FOR UPDATE SKIP LOCKED",
                        (CLAIM_BATCH,),
                    ).fetchall()
                    if not claimed:
                        return
                    conn.execute(
                        f"UPDATE {outbox} SET published = TRUE, published_at = now() "
                        "WHERE position = ANY(%s)",
                        ([row[0] for row in claimed],),
                    )
                done[i] += len(claimed)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    assert sum(done) == rows, f"claimed {sum(done)} of {rows}"
    return rows / elapsed


def notify_wakeup(url: str, channel: str, samples: int = 300) -> float:
    """Median seconds from sending NOTIFY to the listener's wake-up."""
    woke: list[float] = []
    ready = threading.Event()

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {channel}")
            ready.set()
            for _ in conn.notifies(timeout=30, stop_after=samples):
                woke.append(time.perf_counter())

    listener = threading.Thread(target=listen)
    listener.start()
    ready.wait()
    sent: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(samples):
            sent.append(time.perf_counter())
            conn.execute(f"NOTIFY {channel}")
            time.sleep(0.002)
    listener.join()
    return statistics.median(w - s for s, w in zip(sent, woke, strict=True))


def claim_latency(url: str, outbox: str, samples: int = 300) -> float:
    """Median seconds of one read of the first due rows, as the relay claims at a steady
    trickle: a plain SELECT (its lanes' leases fence the rows, so no row lock and no
    commit on the way to the broker; marking them published happens off that path)."""
    taken: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute(
                f"SELECT position, event_id, aggregate_id, payload::text FROM {outbox} "
                f"WHERE published = FALSE ORDER BY position LIMIT {CLAIM_BATCH}"
            ).fetchall()
            taken.append(time.perf_counter() - start)
    return statistics.median(taken)
