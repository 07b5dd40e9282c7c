"""RabbitMQ: publisher confirms to a durable topic exchange, and durable queues to consume.

Topology: one durable topic exchange (``tidings`` by default); each message is persistent,
routed by its event type. A subscription owns a durable queue (a quorum queue by default)
bound with binding keys such as ``order.*`` or ``#``. ``retry_later`` moves a message to
a delay queue ``<queue>.retry.<ms>`` whose TTL dead-letters it back to the main queue (by
the default exchange, so other queues bound to the topic exchange never see it twice).

The publisher drives pika in the caller's thread (``pika_confirms``). aio-pika, which the
subscription uses, is asyncio only: a subscription runs its client on a ``BackgroundLoop``
and offers the synchronous port. A lost connection surfaces as ``BrokerUnavailableError``;
the next call connects again.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from tidings.adapters.background_loop import BackgroundLoop
from tidings.errors import BrokerBusyError, BrokerUnavailableError, TransportError
from tidings.ports import IncomingMessage, OutgoingMessage
from tidings.serialization.cloudevents import CONTENT_TYPE

if TYPE_CHECKING:
    import aio_pika.abc
    import aiormq
    import aiormq.abc

    from tidings.adapters.pika_confirms import LinkClosed, Unconfirmed

T = TypeVar("T")

DEFAULT_EXCHANGE = "tidings"
DELIVERED_HEADER = "tidings-delivered"
"""Deliveries a message had before ``retry_later`` sent it round a delay queue."""
START_HINT = "start it (rabbitmq-server -detached, or systemctl start rabbitmq-server)"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # RabbitMQ 4's default max_message_size
DELAY_QUEUE_GRACE_MS = 60_000  # a delay queue outlives its last message by this much


def _where(url: str) -> str:
    """host:port of an AMQP URL, for messages (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


def _unavailable(
    url: str, exc: BaseException, answered: dict[int, str | None] | None = None
) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"RabbitMQ at {_where(url)} cannot be reached ({type(exc).__name__}: {exc}). Check "
        f"the URL and that the broker runs; {START_HINT}. Nothing of this call may be "
        "assumed done but what it confirmed; retry it later",
        answered,
    )


class _Link:
    """One connection and channel, opened on demand and dropped when they fail."""

    def __init__(self, url: str, name: str, connect_timeout: float) -> None:
        self.url = url
        self.loop = BackgroundLoop(name)
        self.connect_timeout = connect_timeout
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.generation = 0  # tells tokens of a lost channel from current ones
        self.opening = asyncio.Lock()

    def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` on the loop; connection failures become ``BrokerUnavailableError``."""
        return self.loop.run(self._guarded(work))

    async def _guarded(self, work: Callable[[], Awaitable[T]]) -> T:
        from aio_pika.exceptions import AMQPConnectionError, AMQPError, ChannelInvalidStateError

        try:
            return await work()
        except (AMQPConnectionError, ChannelInvalidStateError, OSError, TimeoutError) as exc:
            await self.drop()
            raise _unavailable(self.url, exc) from exc
        except AMQPError as exc:  # the broker closed the channel: a topology conflict, say
            await self.drop()
            raise TransportError(
                f"RabbitMQ at {_where(self.url)} refused an operation: {exc}. Check that "
                "exchanges and queues of these names were not declared with other options"
            ) from exc

    async def open(
        self, setup: Callable[[aio_pika.abc.AbstractChannel], Awaitable[None]]
    ) -> aio_pika.abc.AbstractChannel:
        """The open channel, connecting (and running ``setup`` on it) when there is none.

        Calls from several threads meet on the loop; the lock makes one of them connect.
        """
        import aio_pika

        async with self.opening:
            if self.channel is not None and not self.channel.is_closed:
                return self.channel
            await self.drop()
            self.connection = await aio_pika.connect(self.url, timeout=self.connect_timeout)
            self.channel = await self.connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self.generation += 1
            await setup(self.channel)
            return self.channel

    async def drop(self) -> None:
        """Forget the connection (closing it if it still is open)."""
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None and not connection.is_closed:
            with suppress(Exception):  # it is being thrown away after a failure
                await connection.close()

    def close(self) -> None:
        """Close the connection and stop the loop."""
        with suppress(TransportError, TimeoutError):
            self.loop.run(self.drop(), timeout=self.connect_timeout)
        self.loop.close()


def _properties(message: OutgoingMessage) -> Any:
    """AMQP properties: persistent, CloudEvents JSON, the event id as message id."""
    import pika

    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=message.message_id,
        headers=dict(message.headers) or None,
    )


def _refusal(answer: str, message: OutgoingMessage, exchange: str) -> str:
    from tidings.adapters.pika_confirms import RETURNED

    if answer == RETURNED:
        return (
            f"RabbitMQ returned the message as unroutable: no queue is bound to exchange "
            f"{exchange!r} for routing key {message.routing_key!r}. Bind a queue for it "
            "(start its consumer), or publish with mandatory=False to let it drop"
        )
    return (
        "RabbitMQ refused the message (basic.nack): a queue it routes to rejects "
        "publishes (full, or x-overflow reject-publish); retry later"
    )


class RabbitPublisher:
    """The ``Transport`` port on RabbitMQ, with publisher confirms.

    A batch goes out with up to ``max_in_flight`` messages awaiting their confirms at
    once. With ``mandatory`` (the default) a message no queue is bound for is returned
    and reported as refused, instead of RabbitMQ dropping it silently. A body larger than
    ``max_message_bytes`` is refused before it is sent: RabbitMQ would close the channel
    over it, failing the whole batch, so that one event would stop the relay instead of
    being retried and dead-lettered alone. Set it to the broker's ``max_message_size``.

    The publisher runs pika in the calling thread (``pika_confirms``): no loop thread to
    hand each batch to and back, which the relay's latency and throughput both feel.
    """

    messaging_system = "rabbitmq"  # named on trace spans (docs/tracing.md)

    def __init__(
        self,
        url: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        mandatory: bool = True,
        max_in_flight: int = 1000,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        connect_timeout: float = 5.0,
        confirm_timeout: float = 30.0,
    ) -> None:
        from tidings.adapters.pika_confirms import ConfirmChannel

        self.url = url
        self.exchange = exchange
        self.mandatory = mandatory
        self.max_in_flight = max_in_flight
        self.max_message_bytes = max_message_bytes
        self.confirm_timeout = confirm_timeout
        self._channel = ConfirmChannel(
            url,
            name=f"tidings publisher to {exchange} (pid {os.getpid()})",
            connect_timeout=connect_timeout,
            on_open=self._declare,
        )
        self._lock = threading.Lock()  # pika's connection is used by one thread at a time
        self._closed = False

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Publish and wait for every confirm; per message None or the refusal reason."""
        if not messages:
            return []
        with self._lock:
            if self._closed:
                raise TransportError("this RabbitPublisher is closed: create a new one")
            try:
                return self._publish(messages)
            except BaseException:
                # Whatever was out is unconfirmed: the relay publishes it again, on a
                # connection without the old one's late answers.
                self._channel.drop()
                raise

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._closed = True
            self._channel.drop()

    def _declare(self, channel: Any, done: Callable[[], None]) -> None:
        channel.exchange_declare(
            self.exchange, "topic", durable=True, callback=lambda _frame: done()
        )

    def _publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        import pika.exceptions

        from tidings.adapters.pika_confirms import LinkClosed, Unconfirmed

        results = [self._oversize(message) for message in messages]
        sendable = [i for i, reason in enumerate(results) if reason is None]
        done = {i for i in range(len(messages)) if i not in sendable}  # answered so far
        try:
            if sendable:
                self._channel.ensure_open()
            for start in range(0, len(sendable), self.max_in_flight):
                indices = sendable[start : start + self.max_in_flight]
                chunk = [messages[i] for i in indices]
                wave = [(m.message_id, m.routing_key, m.body, _properties(m)) for m in chunk]
                try:
                    answers = self._channel.publish(
                        wave,
                        exchange=self.exchange,
                        mandatory=self.mandatory,
                        timeout=self.confirm_timeout,
                    )
                except Unconfirmed as exc:
                    for k, answer in exc.answered.items():
                        results[indices[k]] = self._answer(answer, chunk[k])
                        done.add(indices[k])
                    raise self._unconfirmed(
                        exc, {i: results[i] for i in done}, len(messages)
                    ) from exc
                for index, message, answer in zip(indices, chunk, answers, strict=True):
                    results[index] = self._answer(answer, message)
                    done.add(index)
        except LinkClosed as exc:
            raise self._closed_link(exc) from exc
        except (pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise _unavailable(self.url, exc) from exc
        return results

    def _answer(self, answer: str | None, message: OutgoingMessage) -> str | None:
        return None if answer is None else _refusal(answer, message, self.exchange)

    def _unconfirmed(
        self, exc: Unconfirmed, answered: dict[int, str | None], total: int
    ) -> TransportError:
        """The error for a wave cut short: no confirm in time is a busy broker (a stalled
        node, a resource alarm blocking publishers); a lost connection is an outage."""
        if isinstance(exc.reason, TimeoutError):
            return BrokerBusyError(
                f"RabbitMQ at {_where(self.url)} left {total - len(answered)} of {total} "
                f"messages unconfirmed within confirm_timeout {self.confirm_timeout:g} s (a "
                "stalled or overloaded node, or a memory or disk alarm blocking publishers). "
                "A transient outage, not a refusal: they are published again after a pause",
                answered,
            )
        return self._closed_link(exc.reason, answered)

    def _closed_link(
        self, exc: LinkClosed, answered: dict[int, str | None] | None = None
    ) -> TransportError:
        """A channel the broker closed is a refusal of the whole call (a topology
        conflict); any other closed link is an outage."""
        import pika.exceptions

        if isinstance(exc.reason, pika.exceptions.ChannelClosedByBroker):
            return TransportError(
                f"RabbitMQ at {_where(self.url)} refused an operation: {exc}. Check "
                "that exchanges and queues of these names were not declared with "
                "other options"
            )
        return _unavailable(self.url, exc.reason, answered)

    def _oversize(self, message: OutgoingMessage) -> str | None:
        if len(message.body) <= self.max_message_bytes:
            return None
        return (
            f"message of {len(message.body)} bytes is larger than max_message_bytes "
            f"({self.max_message_bytes}), the RabbitMQ max_message_size this publisher was "
            "given; raise both together to let it through"
        )


@dataclass(frozen=True, slots=True)
class _Token:
    generation: int
    tag: int
    message: aiormq.abc.DeliveredMessage


def delivery_count(headers: dict[str, Any], redelivered: bool) -> int:
    """How often a message has been delivered, from what RabbitMQ tells about it.

    Deliveries before a trip through a delay queue are kept in our own header; a quorum
    queue counts its redeliveries in ``x-delivery-count``; a classic queue says only
    ``redelivered``.
    """
    before = headers.get(DELIVERED_HEADER, 0)
    counted = headers.get("x-delivery-count")
    again = counted if isinstance(counted, int) else int(redelivered)
    return 1 + (before if isinstance(before, int) else 0) + again


def _delay_ms(delay: float) -> int:
    """The delay in milliseconds, rounded to two significant digits.

    Each distinct delay is a queue of its own; rounding bounds their number while keeping
    every delay within 5 % of what was asked.
    """
    ms = max(0, round(delay * 1000))
    if ms < 100:
        return ms
    scale: int = 10 ** (len(str(ms)) - 2)
    return round(ms / scale) * scale


class RabbitSubscription:
    """The ``Subscription`` port on a durable RabbitMQ queue: manual acks, a prefetch.

    The queue (``quorum`` by default, or ``classic``) is declared and bound to the
    exchange with ``binding_keys`` when the subscription connects; RabbitMQ pushes up to
    ``prefetch`` unsettled messages, which ``fetch`` hands out in order. With
    ``single_active_consumer`` only one subscriber of the queue gets messages at a time
    and the next takes over when it goes, which keeps per-aggregate order with standby
    consumers (competing consumers of one queue would interleave). Deliveries are
    taken from aiormq's channel under aio-pika: its wrapper costs two tasks per message
    and limits a consumer to a third of the rate.
    """

    messaging_system = "rabbitmq"  # named on trace spans (docs/tracing.md)

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        binding_keys: Sequence[str] = ("#",),
        prefetch: int = 1000,
        queue_type: str = "quorum",
        single_active_consumer: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        self.queue = queue
        self.exchange = exchange
        self.binding_keys = tuple(binding_keys)
        self.prefetch = prefetch
        self.queue_arguments: dict[str, Any] = {"x-queue-type": queue_type}
        if single_active_consumer:
            self.queue_arguments["x-single-active-consumer"] = True
        self.delay_queues: set[str] = set()
        self._link = _Link(url, f"tidings-rabbitmq-{queue}", connect_timeout)
        self._buffer: asyncio.Queue[aiormq.abc.DeliveredMessage] | None = None
        self._unsettled: set[int] = set()  # delivery tags handed out and not settled yet

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` for the first."""
        return self._link.call(lambda: self._fetch(max_messages, timeout))

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Settle the messages; those of a lost connection come again anyway, and are skipped."""
        if messages:
            self._link.call(lambda: self._ack(messages))

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """Move the message to the delay queue for ``delay``; it returns to the back."""
        self._link.call(lambda: self._retry_later(message, delay))

    def give_back(self, messages: Sequence[IncomingMessage]) -> None:
        """Drop the connection: RabbitMQ puts every message it had not seen settled back
        in the queue at once, in its place (a nack to the delay queue would send it to the
        back); the next fetch connects again."""
        with suppress(TransportError, TimeoutError):
            self._link.call(self._link.drop)

    def close(self) -> None:
        """Close the channel: RabbitMQ gives every unsettled message to another consumer."""
        self._link.close()

    async def _setup(self, channel: aio_pika.abc.AbstractChannel) -> None:
        import aio_pika

        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            self.queue, durable=True, arguments=self.queue_arguments
        )
        for key in self.binding_keys:
            await queue.bind(exchange, key)
        buffer: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()
        self._buffer = buffer
        self._unsettled = set()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            buffer.put_nowait(message)

        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(self.queue, on_message)

    async def _fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        await self._link.open(self._setup)
        buffer = self._buffer
        assert buffer is not None  # noqa: S101 - _setup has just set it
        try:
            first = await asyncio.wait_for(buffer.get(), timeout)
        except TimeoutError:
            return []
        taken = [first]
        while len(taken) < max_messages and not buffer.empty():
            taken.append(buffer.get_nowait())
        self._unsettled.update(m.delivery_tag or 0 for m in taken)
        return [self._incoming(m) for m in taken]

    def _incoming(self, message: aiormq.abc.DeliveredMessage) -> IncomingMessage:
        properties = message.header.properties
        headers = dict(properties.headers or {})
        return IncomingMessage(
            body=message.body,
            message_id=properties.message_id,
            delivery_count=delivery_count(headers, bool(message.redelivered)),
            token=_Token(self._link.generation, message.delivery_tag or 0, message),
            headers={
                k: v for k, v in headers.items() if isinstance(v, str) and not k.startswith("x-")
            },
        )

    def _current(self, message: IncomingMessage) -> _Token | None:
        """The message's token if it is still unsettled on the current channel, else None.

        A message of a channel that is gone was given back by RabbitMQ: settling it is moot.
        """
        token = message.token
        if not isinstance(token, _Token):
            raise TransportError("this message was not fetched from a RabbitSubscription")
        if token.generation != self._link.generation or self._link.channel is None:
            return None
        return token if token.tag in self._unsettled else None

    async def _ack(self, messages: Sequence[IncomingMessage]) -> None:
        tags = {token.tag for token in map(self._current, messages) if token is not None}
        if not tags or self._link.channel is None:
            return
        channel = await self._link.channel.get_underlay_channel()
        top = max(tags)
        if all(tag in tags for tag in self._unsettled if tag <= top):
            # The usual case, a whole batch in order: one frame settles it.
            await channel.basic_ack(top, multiple=True)
        else:
            for tag in sorted(tags)[:-1]:
                await channel.basic_ack(tag, wait=False)
            await channel.basic_ack(top)  # and wait for the socket to take them all
        self._unsettled.difference_update(tags)

    async def _retry_later(self, message: IncomingMessage, delay: float) -> None:
        import aio_pika

        token = self._current(message)
        if token is None:
            return  # settled, or its channel is gone and RabbitMQ delivers it again
        delivered, properties = token.message, token.message.header.properties
        channel = await self._link.open(self._setup)
        queue = await self._delay_queue(channel, _delay_ms(delay))
        headers = dict(properties.headers or {})
        headers[DELIVERED_HEADER] = delivery_count(headers, bool(delivered.redelivered))
        for counted_by_the_queue in ("x-delivery-count", "x-death"):
            headers.pop(counted_by_the_queue, None)
        copy = aio_pika.Message(
            delivered.body,
            content_type=properties.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=properties.message_id,
            headers=headers,
        )
        # Confirmed in the delay queue before the original is settled: a crash between
        # the two leaves a duplicate, never a loss.
        await channel.default_exchange.publish(copy, queue, mandatory=True)
        await delivered.channel.basic_ack(token.tag)
        self._unsettled.discard(token.tag)

    async def _delay_queue(self, channel: aio_pika.abc.AbstractChannel, ms: int) -> str:
        """Declare (again, which keeps it alive) the delay queue of ``ms`` milliseconds."""
        name = f"{self.queue}.retry.{ms}"
        await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-message-ttl": ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queue,
                # Unused for this long after its last message expired, it goes away.
                "x-expires": ms + DELAY_QUEUE_GRACE_MS,
            },
        )
        self.delay_queues.add(name)
        return name
