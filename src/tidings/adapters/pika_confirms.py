"""A pika connection in publisher-confirm mode, driven in the caller's own thread.

The RabbitMQ publisher and subscription each own one.

pika's ``SelectConnection`` is callback based and runs only while its I/O loop runs: each
call here starts the loop and stops it once what the caller waits for has come. Nothing
runs in between, so there is no second thread and no hand-over between threads on the way
of a publish; measured beside aio-pika on this project's machine, a batch of 1,000
confirmed messages went out two to three times as fast, and a single message's round
trip was shorter too (``docs/brokers.md``).

Because the loop is idle between calls, AMQP heartbeats are turned off: the broker would
close a connection whose heartbeats stop while the relay waits for work, or while a
consumer handles a batch. A dead peer is found by the confirm timeout instead (and, for
a subscription, by TCP keepalive probes: ``rabbitmq.TCP_KEEPALIVE``), and a connection
the broker closed meanwhile is noticed (and reopened) at the start of the next call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection


class LinkClosed(Exception):  # noqa: N818 - a state, told apart from pika's own errors
    """The connection or channel closed; ``reason`` is pika's exception for it."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason) or type(reason).__name__)
        self.reason = reason


class Unconfirmed(Exception):  # noqa: N818 - a state, told apart from pika's own errors
    """A wave ended before every confirm came; ``reason`` says why (``LinkClosed`` or
    ``TimeoutError``), ``answered`` maps the index of each message the broker did answer
    to its answer (None, NACKED or RETURNED)."""

    def __init__(self, reason: LinkClosed | TimeoutError, answered: dict[int, str | None]) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.answered = answered


NACKED, RETURNED = "nack", "returned"
IDLE_CHECK_SECONDS = 1.0  # idle this long, the connection is polled before it is used
OPEN_MARGIN_SECONDS = 1.0  # pika's own stack timeout must fire first: see ensure_open


@dataclass
class Wave:
    """Messages published together: per message None (confirmed) or NACKED or RETURNED,
    and the indices whose confirm is still awaited."""

    first_tag: int
    results: list[str | None]
    waiting: set[int]
    by_id: dict[str | None, list[int]] = field(default_factory=dict)
    returned: dict[int, str] = field(default_factory=dict)
    low: int = 0  # tags below it are settled


class ConfirmChannel:
    """One connection and one channel with confirms on, opened on demand.

    ``publish`` sends a wave and waits for every confirm; the broker lists the connection
    under ``name``. ``on_open(channel, done)`` runs on each fresh channel (to declare the
    topology, and for a subscription to start consuming) and calls ``done()`` when it is
    ready. A consumer's delivery callback runs inside the loop: it buffers the message and
    calls ``wake()``, which ends a ``wait`` for it; ``call`` waits for one method's answer,
    ``flush`` until what pika buffered is written. Not thread safe: the caller serialises
    its calls.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        connect_timeout: float,
        on_open: Callable[[Any, Callable[[], None]], None],
    ) -> None:
        self.parameters = pika.URLParameters(url)
        self.parameters.heartbeat = 0
        self.parameters.client_properties = {"connection_name": name}  # for rabbitmqctl
        self.parameters.connection_attempts = 1
        self.parameters.socket_timeout = connect_timeout
        self.parameters.stack_timeout = connect_timeout
        self.connect_timeout = connect_timeout
        self.on_open = on_open
        self.connection: Any = None
        self.channel: Any = None
        self.ready = False  # the channel is open, in confirm mode, and on_open is done
        self.failure: BaseException | None = None
        self.next_tag = 1
        self.wave: Wave | None = None
        self.used_at = 0.0
        self._until: Callable[[], bool] = lambda: True

    # -- driving the loop ---------------------------------------------------------------

    def _run(self, done: Callable[[], bool], timeout: float) -> None:
        """Run the I/O loop until ``done()``, a failure, or ``timeout`` seconds."""
        loop = self.connection.ioloop
        self._until = done
        if not done() and self.failure is None:
            timer = loop.call_later(timeout, loop.stop)
            try:
                loop.start()
            finally:
                loop.remove_timeout(timer)
        if self.failure is not None:
            raise LinkClosed(self.failure)
        if not done():
            raise TimeoutError(f"no answer from RabbitMQ within {timeout:g} s")

    def wake(self) -> None:
        """Stop the loop once what it runs for has come: a callback that changed what a
        wait looks at calls it."""
        if self._until():
            self.connection.ioloop.stop()

    def wait(self, until: Callable[[], bool], timeout: float) -> bool:
        """Run the loop until ``until()`` (which a callback announces by ``wake()``) or
        ``timeout`` seconds; whether ``until()`` came. ``LinkClosed`` if the connection or
        channel closed first."""
        try:
            self._run(until, timeout)
        except TimeoutError:
            return False
        finally:
            self.used_at = time.monotonic()
        return True

    def call(self, method: Callable[[Callable[[Any], None]], None], timeout: float) -> None:
        """Send one synchronous AMQP method and wait for its answer: ``method(answer)``
        sends it with ``answer`` as its callback. ``TimeoutError`` without one in time."""
        answered: list[Any] = []

        def answer(frame: Any) -> None:
            answered.append(frame)
            self.wake()

        method(answer)
        self._run(lambda: bool(answered), timeout)
        self.used_at = time.monotonic()

    def flush(self, timeout: float) -> None:
        """Write out every frame pika holds in its buffer: it writes only while the loop
        runs, and a frame still buffered when the process stops was never sent."""
        connection, loop = self.connection, self.connection.ioloop
        deadline, pause = time.monotonic() + timeout, 0.0
        while self.failure is None and _unsent(connection):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"RabbitMQ took no data within {timeout:g} s")
            self._turn(loop, pause)
            pause = 0.005  # the socket is full: wait for it rather than spin
        if self.failure is not None:
            raise LinkClosed(self.failure)
        self.used_at = time.monotonic()

    def _failed(self, connection: Any, reason: Any) -> None:
        # A connection being dropped closes too: only the current one's failure counts.
        if connection is self.connection and self.failure is None:
            self.failure = _as_exception(reason)
        connection.ioloop.stop()

    # -- opening ------------------------------------------------------------------------

    def ensure_open(self) -> None:
        """Connect and open the channel unless both are open and well."""
        if self.ready and self.failure is None:
            if time.monotonic() - self.used_at >= IDLE_CHECK_SECONDS:
                # A close the broker sent while the loop was idle shows now.
                self._turn(self.connection.ioloop)
            if self.failure is None:
                return
        self.drop()
        self.connection = SelectConnection(
            self.parameters,
            on_open_callback=lambda connection: connection.channel(
                on_open_callback=self._channel_opened
            ),
            on_open_error_callback=self._failed,
            on_close_callback=self._failed,
        )
        # pika gives up after stack_timeout (= connect_timeout) and closes its socket; a
        # connection aborted by ``drop`` while pika still opens it trips an assertion in
        # pika 1.3 and leaves its socket open, so the wait here lasts a little longer.
        self._run(lambda: self.ready, self.connect_timeout + OPEN_MARGIN_SECONDS)

    def _channel_opened(self, channel: Any) -> None:
        connection = self.connection
        channel.add_on_close_callback(lambda _channel, reason: self._failed(connection, reason))
        channel.add_on_return_callback(self._returned)
        self.channel, self.next_tag = channel, 1
        channel.confirm_delivery(
            self._confirmed, callback=lambda _frame: self.on_open(channel, self._opened)
        )

    def _opened(self) -> None:
        self.ready = True
        self.wake()

    def poll(self) -> None:
        """One turn of the loop without waiting: take in what arrived while it was idle.
        ``LinkClosed`` if the connection or channel closed."""
        self._turn(self.connection.ioloop)
        if self.failure is not None:
            raise LinkClosed(self.failure)

    @staticmethod
    def _turn(loop: Any, pause: float = 0.0) -> None:
        """Run ``loop`` once through what is due now (or within ``pause`` seconds)."""
        timer = loop.call_later(pause, loop.stop)
        loop.start()
        # The timer fires in the loop's first turn; should it not have, left behind it
        # would stop the next run of the loop before that run's answers are in.
        loop.remove_timeout(timer)

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self,
        messages: Sequence[tuple[str | None, str, bytes, Any]],
        *,
        exchange: str,
        mandatory: bool,
        timeout: float,
    ) -> list[str | None]:
        """Publish (message id, routing key, body, properties) tuples and wait for every
        confirm; per message None, NACKED or RETURNED. ``Unconfirmed`` if the connection
        closed or the time ran out first."""
        count = len(messages)
        wave = Wave(self.next_tag, [None] * count, set(range(count)), low=self.next_tag)
        for index, (message_id, _, _, _) in enumerate(messages):
            wave.by_id.setdefault(message_id, []).append(index)
        self.wave = wave
        try:
            for _, routing_key, body, properties in messages:
                self.channel.basic_publish(exchange, routing_key, body, properties, mandatory)
                self.next_tag += 1
            self._run(lambda: not wave.waiting, timeout)
        except (LinkClosed, TimeoutError) as exc:
            answered = {i: r for i, r in enumerate(wave.results) if i not in wave.waiting}
            raise Unconfirmed(exc, answered) from exc
        finally:
            self.wave = None
            self.used_at = time.monotonic()
        return wave.results

    def _confirmed(self, frame: Any) -> None:
        wave, method = self.wave, frame.method
        if wave is None:
            return  # the late confirm of a wave given up on (its connection is dropped)
        answer = NACKED if isinstance(method, pika.spec.Basic.Nack) else None
        top = method.delivery_tag
        for tag in range(wave.low, top + 1) if method.multiple else (top,):
            index = tag - wave.first_tag
            if index in wave.waiting:
                wave.waiting.discard(index)
                wave.results[index] = answer or wave.returned.get(index)
        if method.multiple:
            wave.low = max(wave.low, top + 1)
        self.wake()

    def _returned(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # A return comes before the confirm of the same message; it carries no delivery
        # tag, so the message is found by its id (in order, should ids repeat).
        wave = self.wave
        indices = wave.by_id.get(properties.message_id) if wave is not None else None
        if wave is not None and indices:
            wave.returned[indices.pop(0)] = RETURNED

    # -- closing ------------------------------------------------------------------------

    def drop(self) -> None:
        """Close the connection if it is open, and free its loop."""
        connection, self.connection, self.channel = self.connection, None, None
        self.ready, self.failure = False, None
        if connection is None:
            return
        with suppress(Exception):  # it is being thrown away, maybe after a failure
            if not (connection.is_closing or connection.is_closed):
                connection.close()  # also aborts a connection still opening
            self._until_closed(connection)
            if not connection.is_closed:
                # The broker did not answer the close (a stalled node): abort the socket,
                # as pika does itself when a connection fails, rather than leave it open.
                connection._adapter_disconnect_stream()  # pika has no public abort
                self._until_closed(connection)
        with suppress(Exception):
            # A connection that failed while opening is closed, but pika closes its socket
            # in a callback still queued on the loop: one more turn runs it.
            self._turn(connection.ioloop)
        with suppress(Exception):
            connection.ioloop.close()

    def _until_closed(self, connection: Any) -> None:
        """Run the loop until ``connection`` is closed, for ``connect_timeout`` at most."""
        # The channel's close callback stops the loop before the connection is done.
        loop, deadline = connection.ioloop, time.monotonic() + self.connect_timeout
        while not connection.is_closed and time.monotonic() < deadline:
            timer = loop.call_later(deadline - time.monotonic(), loop.stop)
            loop.start()
            loop.remove_timeout(timer)


def _unsent(connection: Any) -> int:
    """Bytes pika has buffered for ``connection``'s socket and not yet written."""
    transport = connection._transport  # pika has no public accessor
    return 0 if transport is None else int(transport.get_write_buffer_size())


def _as_exception(reason: Any) -> BaseException:
    return reason if isinstance(reason, BaseException) else pika.exceptions.AMQPError(str(reason))
