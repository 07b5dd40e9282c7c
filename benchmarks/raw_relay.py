"""The floor under the relay's commit -> ack latency: a hand-written relay, drivers only.

It does the least work that takes a committed outbox row to the broker: block on
``LISTEN`` (the channel the outbox's writers ``NOTIFY``), read the rows after the last one
it sent with a plain ``SELECT``, publish each one and wait for the broker's ack (nats-py on
one asyncio loop that also listens, through psycopg's async connection; pika's
``BlockingConnection`` with confirms in one thread), note the ack's time. No leases, no
retries, no settling, no order per aggregate beyond the single writer's: nothing tidings
promises, only the path. ``relay_latency.measure`` runs it in place of the relay, with the
same writer, the same clocks and the same count, so the two figures compare as they are.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import nats
import pika
import psycopg

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"
READ = (
    "SELECT position, event_id, event_type, payload::text FROM {} "
    "WHERE position > %s ORDER BY position"
)


class RawRelay:
    """Publishes every row the writer commits to ``broker``; ``acked`` maps event id to the
    moment its ack came back (``time.perf_counter``), as ``AckClock`` does for the relay."""

    def __init__(self, url: str, outbox: str, channel: str, broker: str, place: str) -> None:
        self.url, self.read, self.channel = url, READ.format(outbox), channel
        self.broker, self.place = broker, place  # the subject prefix or the exchange
        self.acked: dict[str, float] = {}
        self.listening = threading.Event()
        self._stop = threading.Event()
        work = self._nats if broker == "nats" else self._rabbitmq
        self._thread = threading.Thread(target=work, name="raw-relay", daemon=True)

    def start(self) -> None:
        """Listen and relay on a thread of its own; returns once it listens."""
        self._thread.start()
        self.listening.wait(10)

    def stop(self) -> None:
        """Finish and join the thread."""
        self._stop.set()
        self._thread.join(10)

    def _nats(self) -> None:
        asyncio.run(self._nats_loop())

    async def _nats_loop(self) -> None:
        client = await nats.connect(NATS)
        js = client.jetstream()
        async with (
            await psycopg.AsyncConnection.connect(self.url, autocommit=True) as listener,
            await psycopg.AsyncConnection.connect(self.url, autocommit=True) as reader,
        ):
            await listener.execute(f"LISTEN {self.channel}")
            self.listening.set()
            last = 0
            while not self._stop.is_set():
                rows = await (await reader.execute(self.read, (last,))).fetchall()
                for position, event_id, event_type, payload in rows:
                    subject = f"{self.place}.{event_type}"
                    await js.publish(subject, payload.encode(), headers={"Nats-Msg-Id": event_id})
                    self.acked[event_id] = time.perf_counter()
                    last = position
                async for _ in listener.notifies(timeout=0.1, stop_after=1):
                    pass
        await client.close()

    def _rabbitmq(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP))
        channel: Any = connection.channel()
        channel.confirm_delivery()
        with (
            psycopg.connect(self.url, autocommit=True) as listener,
            psycopg.connect(self.url, autocommit=True) as reader,
        ):
            listener.execute(f"LISTEN {self.channel}")
            self.listening.set()
            last = 0
            while not self._stop.is_set():
                for position, event_id, event_type, payload in reader.execute(
                    self.read, (last,)
                ).fetchall():
                    properties = pika.BasicProperties(delivery_mode=2, message_id=event_id)
                    channel.basic_publish(
                        self.place, event_type, payload.encode(), properties, mandatory=True
                    )
                    self.acked[event_id] = time.perf_counter()
                    last = position
                for _ in listener.notifies(timeout=0.1, stop_after=1):
                    pass
        connection.close()
