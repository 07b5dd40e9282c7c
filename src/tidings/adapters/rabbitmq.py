"""RabbitMQ: publisher confirms to a durable topic exchange, and durable queues to consume.

Topology: one durable topic exchange (``tidings`` by default); each message is persistent,
routed by its event type. A subscription owns a durable queue (a quorum queue by default)
bound with binding keys such as ``order.*`` or ``#``. ``retry_later`` moves a message to
a delay queue ``<queue>.retry.<ms>`` whose TTL dead-letters it back to the main queue (by
the default exchange, so other queues bound to the topic exchange never see it twice).

Publisher and subscription both drive pika's ``SelectConnection`` in the caller's own
thread (``pika_confirms``): no loop thread to hand each call to and back. A lost
connection surfaces as ``BrokerUnavailableError``; the next call connects again.

pika reads and writes only while its I/O loop runs, and each call here runs it only until
what it waits for has come. A consumer's own loop keeps it turning: every ``fetch`` runs
it (for up to its timeout while no message is buffered), and ``ack`` runs it until its
frames are written, so that an acknowledged message is settled on the wire, not only in a
buffer. AMQP heartbeats stay off, as the loop is idle while a batch is handled: a broker
that closes the connection is noticed by the next call, a peer that vanished without a
word by the kernel's keepalive probes of the subscription's socket (``TCP_KEEPALIVE``:
about a minute of silence) or by the publisher's confirm timeout.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tidings.errors import BrokerBusyError, BrokerUnavailableError, TransportError
from tidings.ports import IncomingMessage, OutgoingMessage
from tidings.serialization.cloudevents import CONTENT_TYPE

if TYPE_CHECKING:
    from tidings.adapters.pika_confirms import LinkClosed, Unconfirmed

_Delivery = tuple[int, bool, Any, bytes]  # delivery tag, redelivered, properties, body

DEFAULT_EXCHANGE = "tidings"
DELIVERED_HEADER = "tidings-delivered"
"""Deliveries a message had before ``retry_later`` sent it round a delay queue."""
START_HINT = "start it (rabbitmq-server -detached, or systemctl start rabbitmq-server)"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # RabbitMQ 4's default max_message_size
DELAY_QUEUE_GRACE_MS = 60_000  # a delay queue outlives its last message by this much
TCP_KEEPALIVE = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
"""Kernel probes of a subscription's idle socket: a silent peer is given up after ~60 s."""


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


def _link_error(
    url: str, exc: LinkClosed, answered: dict[int, str | None] | None = None
) -> TransportError:
    """The error for a closed link: a channel the broker closed is a refusal of the whole
    call (a topology conflict); any other closed link is an outage."""
    import pika.exceptions

    if isinstance(exc.reason, pika.exceptions.ChannelClosedByBroker):
        return TransportError(
            f"RabbitMQ at {_where(url)} refused an operation: {exc}. Check that exchanges "
            "and queues of these names were not declared with other options"
        )
    return _unavailable(url, exc.reason, answered)


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
            raise _link_error(self.url, exc) from exc
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
        return _link_error(self.url, exc.reason, answered)

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
    delivery: _Delivery


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
    consumers (competing consumers of one queue would interleave).

    pika runs in the calling thread (``pika_confirms``), on a channel in confirm mode so
    that ``retry_later`` knows its copy is safe before it settles the original: a
    delivery costs a tuple in a buffer, no task or future, and no thread hand-over. Calls
    are serialised; ``close()`` may come from another thread once the consumer's stopped.
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
        confirm_timeout: float = 30.0,
    ) -> None:
        from tidings.adapters.pika_confirms import ConfirmChannel

        self.url = url
        self.queue = queue
        self.exchange = exchange
        self.binding_keys = tuple(binding_keys)
        self.prefetch = prefetch
        self.queue_arguments: dict[str, Any] = {"x-queue-type": queue_type}
        if single_active_consumer:
            self.queue_arguments["x-single-active-consumer"] = True
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self.delay_queues: set[str] = set()
        self._channel = ConfirmChannel(
            url,
            name=f"tidings subscription of {queue} (pid {os.getpid()})",
            connect_timeout=connect_timeout,
            on_open=self._declare,
        )
        # No heartbeats (see the module docstring): the kernel probes an idle socket.
        self._channel.parameters.tcp_options = dict(TCP_KEEPALIVE)
        self._buffer: deque[_Delivery] = deque()  # delivered, not yet fetched
        self._unsettled: set[int] = set()  # delivery tags handed out and not settled yet
        self._generation = 0  # tells tokens of a lost channel from current ones
        self._lock = threading.Lock()  # pika's connection is used by one thread at a time
        self._closed = False

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` for the first."""
        with self._lock, self._guarded():
            self._channel.ensure_open()
            buffer = self._buffer
            # Take in what the socket holds (pika reads a slice of it per turn), so that
            # a batch is as large as what has arrived, not as one read.
            while 0 < len(buffer) < max_messages:
                before = len(buffer)
                self._channel.poll()
                if len(buffer) == before:
                    break
            if not buffer and not self._channel.wait(lambda: bool(buffer), timeout):
                return []
            taken = [buffer.popleft() for _ in range(min(max_messages, len(buffer)))]
            self._unsettled.update(delivery[0] for delivery in taken)
            return [self._incoming(delivery) for delivery in taken]

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Settle the messages; those of a lost connection come again anyway, and are skipped."""
        if not messages:
            return
        with self._lock, self._guarded():
            tags = {token.tag for token in map(self._current, messages) if token is not None}
            if not tags:
                return
            channel, top = self._channel.channel, max(tags)
            if all(tag in tags for tag in self._unsettled if tag <= top):
                # The usual case, a whole batch in order: one frame settles it.
                channel.basic_ack(top, multiple=True)
            else:
                for tag in sorted(tags):
                    channel.basic_ack(tag)
            self._unsettled.difference_update(tags)
            self._channel.flush(self.connect_timeout)  # settled only once on the wire

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """Move the message to the delay queue for ``delay``; it returns to the back."""
        with self._lock, self._guarded():
            if self._current(message) is None:
                return  # settled, or its channel is gone and RabbitMQ delivers it again
            self._channel.ensure_open()  # reconnected, the token is stale: skipped below
            token = self._current(message)
            if token is None:
                return
            queue = self._delay_queue(_delay_ms(delay))
            # Confirmed in the delay queue before the original is settled: a crash between
            # the two leaves a duplicate, never a loss.
            [answer] = self._channel.publish(
                [self._copy(token, queue)],
                exchange="",
                mandatory=True,
                timeout=self.confirm_timeout,
            )
            if answer is not None:
                self._drop()  # the original comes again, at once
                raise self._refused_copy(answer, queue)
            self._channel.channel.basic_ack(token.tag)
            self._unsettled.discard(token.tag)
            self._channel.flush(self.connect_timeout)

    def give_back(self, messages: Sequence[IncomingMessage]) -> None:
        """Drop the connection: RabbitMQ puts every message it had not seen settled back
        in the queue at once, in its place (a nack to the delay queue would send it to the
        back); the next fetch connects again."""
        with self._lock:
            self._drop()

    def close(self) -> None:
        """Close the channel: RabbitMQ gives every unsettled message to another consumer."""
        with self._lock:
            self._closed = True
            self._drop()

    # -- the connection -----------------------------------------------------------------

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Refuse work once closed; map pika's failures to ours, dropping the connection
        (a channel the broker closed is a refusal, anything else an outage)."""
        import pika.exceptions

        from tidings.adapters.pika_confirms import LinkClosed, Unconfirmed

        if self._closed:
            raise TransportError("this RabbitSubscription is closed: create a new one")
        try:
            yield
        except LinkClosed as exc:
            self._drop()
            raise _link_error(self.url, exc) from exc
        except Unconfirmed as exc:  # the retry copy's confirm did not come
            self._drop()
            if isinstance(exc.reason, LinkClosed):
                raise _link_error(self.url, exc.reason) from exc
            raise _unavailable(self.url, exc.reason) from exc
        except (pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
            self._drop()
            raise _unavailable(self.url, exc) from exc

    def _drop(self) -> None:
        """Close the connection; what it delivered is the broker's again."""
        self._channel.drop()
        self._buffer.clear()
        self._unsettled.clear()

    def _declare(self, channel: Any, done: Callable[[], None]) -> None:
        """Declare the topology on a fresh channel, then consume (pika sends each method
        once the one before it was answered; a refusal closes the channel)."""
        self._generation += 1
        self._buffer.clear()
        self._unsettled.clear()
        channel.basic_qos(prefetch_count=self.prefetch)
        channel.exchange_declare(self.exchange, "topic", durable=True)
        channel.queue_declare(self.queue, durable=True, arguments=self.queue_arguments)
        for key in self.binding_keys:
            channel.queue_bind(self.queue, self.exchange, key)
        channel.basic_consume(self.queue, self._delivered, callback=lambda _frame: done())

    def _delivered(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        buffer = self._buffer
        buffer.append((method.delivery_tag, method.redelivered, properties, body))
        if len(buffer) == 1:
            self._channel.wake()  # a fetch waits for the first one

    # -- messages -----------------------------------------------------------------------

    def _incoming(self, delivery: _Delivery) -> IncomingMessage:
        tag, redelivered, properties, body = delivery
        headers = dict(properties.headers or {})
        return IncomingMessage(
            body=body,
            message_id=properties.message_id,
            delivery_count=delivery_count(headers, bool(redelivered)),
            token=_Token(self._generation, tag, delivery),
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
        if token.generation != self._generation or not self._channel.ready:
            return None
        return token if token.tag in self._unsettled else None

    def _copy(self, token: _Token, queue: str) -> tuple[str | None, str, bytes, Any]:
        """The message to publish to the delay queue: the original's body and properties,
        with the deliveries so far in our header instead of the queue's own counts."""
        import pika

        _, redelivered, properties, body = token.delivery
        headers = dict(properties.headers or {})
        headers[DELIVERED_HEADER] = delivery_count(headers, bool(redelivered))
        for counted_by_the_queue in ("x-delivery-count", "x-death"):
            headers.pop(counted_by_the_queue, None)
        copy = pika.BasicProperties(
            content_type=properties.content_type,
            delivery_mode=2,
            message_id=properties.message_id,
            headers=headers,
        )
        return properties.message_id, queue, body, copy

    def _refused_copy(self, answer: str, queue: str) -> TransportError:
        from tidings.adapters.pika_confirms import RETURNED

        why = "returned it as unroutable" if answer == RETURNED else "refused it (basic.nack)"
        return TransportError(
            f"RabbitMQ at {_where(self.url)} {why} when a message was moved to the delay "
            f"queue {queue!r}; the original was not settled and is delivered again. Check "
            "the policies and limits that apply to that queue"
        )

    def _delay_queue(self, ms: int) -> str:
        """Declare (again, which keeps it alive) the delay queue of ``ms`` milliseconds."""
        name = f"{self.queue}.retry.{ms}"
        arguments = {
            "x-queue-type": "classic",
            "x-message-ttl": ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue,
            # Unused for this long after its last message expired, it goes away.
            "x-expires": ms + DELAY_QUEUE_GRACE_MS,
        }
        channel = self._channel.channel
        self._channel.call(
            lambda answer: channel.queue_declare(
                name, durable=True, arguments=arguments, callback=answer
            ),
            self.connect_timeout,
        )
        self.delay_queues.add(name)
        return name
