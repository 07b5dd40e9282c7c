"""The floor under the relay's commit -> ack latency: a hand-written relay, drivers only.

It does the least work that takes a committed outbox row to the broker, on one asyncio
loop: wait on ``LISTEN`` (the channel the outbox's writers ``NOTIFY``; psycopg's async
connection), read the rows after the last one it sent with a plain ``SELECT``, publish
them all at once and await every ack (nats-py; aio-pika with publisher confirms), note
the time. One loop and one thread: no hand-over between threads anywhere on the path. No leases, no
retries, no settling, no order per aggregate beyond the single writer's: nothing tidings
promises, only the path. ``relay_latency.measure`` runs it in place of the relay, with the
same writer, the same clocks and the same count, so the two figures compare as they are.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import nats
import psycopg

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"
Publish = Callable[[tuple[Any, ...]], Awaitable[None]]
Close = Callable[[], Awaitable[Any]]
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
        self._thread = threading.Thread(target=self._run, name="raw-relay", daemon=True)

    def start(self) -> None:
        """Listen and relay on a thread of its own; returns once it listens."""
        self._thread.start()
        self.listening.wait(10)

    def stop(self) -> None:
        """Finish and join the thread."""
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._relay())

    async def _relay(self) -> None:
        publish, close = await (self._nats() if self.broker == "nats" else self._rabbitmq())
        async with (
            await psycopg.AsyncConnection.connect(self.url, autocommit=True) as listener,
            await psycopg.AsyncConnection.connect(self.url, autocommit=True) as reader,
        ):
            await listener.execute(f"LISTEN {self.channel}")
            self.listening.set()
            last = 0
            while not self._stop.is_set():
                rows = await (await reader.execute(self.read, (last,))).fetchall()
                if rows:
                    # Every row read goes out at once, and the acks are awaited together.
                    await asyncio.gather(*(publish(row) for row in rows))
                    now = time.perf_counter()
                    for row in rows:
                        self.acked[row[1]] = now
                    last = rows[-1][0]
                async for _ in listener.notifies(timeout=0.1, stop_after=1):
                    pass
        await close()

    async def _nats(self) -> tuple[Publish, Close]:
        client = await nats.connect(NATS)
        js = client.jetstream()

        async def publish(row: tuple[Any, ...]) -> None:
            _, event_id, event_type, payload = row
            subject = f"{self.place}.{event_type}"
            await js.publish(subject, payload.encode(), headers={"Nats-Msg-Id": event_id})

        return publish, client.close

    async def _rabbitmq(self) -> tuple[Publish, Close]:
        connection = await aio_pika.connect(AMQP)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(self.place)

        async def publish(row: tuple[Any, ...]) -> None:
            _, event_id, event_type, payload = row
            persistent = aio_pika.DeliveryMode.PERSISTENT
            body = payload.encode()
            message = aio_pika.Message(body, delivery_mode=persistent, message_id=event_id)
            await exchange.publish(message, event_type, mandatory=True)

        return publish, connection.close
