"""NATS JetStream: async-acked publishes to a stream, and durable pull consumers.

Topology: one stream (``TIDINGS`` by default) holding the subjects ``<prefix>.>``; an
event of type ``order.placed`` goes to ``<prefix>.order.placed`` with the header
``Nats-Msg-Id`` set to the event id, so JetStream drops a relay's retry of it inside the
stream's duplicate window. A subscription is a durable pull consumer with explicit acks.

nats-py is asyncio only: each adapter runs its client on a ``BackgroundLoop``. The
client's own reconnect is off on purpose: a lost connection fails the call in flight
with ``BrokerUnavailableError`` at once (the caller backs off and retries), and the next
call connects again, so nothing waits in a client-side buffer during an outage.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from tidings.adapters.background_loop import BackgroundLoop
from tidings.adapters.nats_chain import (
    CHAIN_BROKEN,
    Expected,
    WrongLast,
    expectation_headers,
    expectations,
    resolve,
    stored_sequence,
)
from tidings.adapters.nats_pull import Puller
from tidings.adapters.nats_wire import Commands, WireError, can_send_raw, hpub, send
from tidings.errors import BrokerBusyError, BrokerUnavailableError, TransportError
from tidings.ports import HELD_BACK, HeldBack, IncomingMessage, OutgoingMessage
from tidings.serialization.cloudevents import CONTENT_TYPE

if TYPE_CHECKING:
    import nats.aio.client
    import nats.aio.msg
    import nats.js

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_STREAM = "TIDINGS"
DEFAULT_PREFIX = "tidings"
START_HINT = (
    "start it with JetStream on (nats-server -js, or: start-stop-daemon --start --oknodo "
    "--background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd "
    "/var/lib/nats-server -l /var/log/nats-server.log)"
)
BUSY = 503  # JetStream's status for "cannot answer now" (no responders, not available)
CHAIN_PAUSE = 1.0  # seconds without chains once another publisher's message broke one


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 4222}"


class _Acks:
    """The answers awaited for one chunk of publishes, in the order they were sent."""

    def __init__(self, count: int) -> None:
        self.replies: list[nats.aio.msg.Msg | None] = [None] * count
        self.missing = count
        self.complete: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tokens: list[str] = []

    def arrived(self, index: int, reply: nats.aio.msg.Msg) -> None:
        """Keep the answer to message ``index``."""
        if self.replies[index] is None:
            self.replies[index] = reply
            self.missing -= 1
            if self.missing == 0:
                self.stop_waiting()

    def stop_waiting(self) -> None:
        """Wake the chunk's publisher: every answer is in, the connection is gone, or the
        time is up (``missing`` says which)."""
        if not self.complete.done():
            self.complete.set_result(None)


class _AckInbox:
    """Where JetStream's answers to our publishes arrive, each kept for its chunk.

    nats-py's ``publish_async`` leaves the future of a publish pending forever when
    JetStream answers with an error (its reply handler raises instead of setting the
    exception: nats-py 2.16), so a refused message would look like a lost ack. This
    inbox keeps the answer itself and lets ``_refusal`` read it; a chunk waits on one
    event, not on a future per message.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.waiting: dict[str, tuple[_Acks, int]] = {}
        self._tokens = itertools.count()

    @classmethod
    async def start(cls, client: nats.aio.client.Client) -> _AckInbox:
        """An inbox subscribed on ``client``."""
        inbox = cls(client.new_inbox() + ".")
        await client.subscribe(inbox.prefix + "*", cb=inbox._on_reply)
        return inbox

    def expect(self, acks: _Acks, index: int) -> str:
        """The reply subject for message ``index`` of ``acks``."""
        token = str(next(self._tokens))
        self.waiting[token] = (acks, index)
        acks.tokens.append(token)
        return self.prefix + token

    def give_up(self) -> None:
        """Wake every chunk still waiting for answers (the connection was lost)."""
        for acks, _ in list(self.waiting.values()):
            acks.stop_waiting()

    def forget(self, acks: _Acks) -> None:
        """Stop waiting for what is still missing of ``acks`` (given up after a timeout)."""
        for token in acks.tokens:
            self.waiting.pop(token, None)

    async def _on_reply(self, reply: nats.aio.msg.Msg) -> None:
        waiting = self.waiting.pop(reply.subject[len(self.prefix) :], None)
        if waiting is not None:
            waiting[0].arrived(waiting[1], reply)


@dataclass(frozen=True, slots=True)
class _Connection:
    """A live connection, its JetStream context, and the event set when it is lost."""

    client: nats.aio.client.Client
    js: nats.js.JetStreamContext
    lost: asyncio.Event
    generation: int
    acks: _AckInbox


class _Link:
    """One NATS connection with JetStream, opened on demand and dropped when it fails."""

    def __init__(self, url: str, name: str, connect_timeout: float) -> None:
        self.url = url
        self.loop = BackgroundLoop(name)
        self.connect_timeout = connect_timeout
        self.current: _Connection | None = None
        self.generation = 0
        self.opening = asyncio.Lock()

    def call(self, work: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``work`` on the loop; connection failures become ``BrokerUnavailableError``."""
        return self.loop.run(self._guarded(work), timeout)

    async def _guarded(self, work: Callable[[], Awaitable[T]]) -> T:
        import nats.errors
        import nats.js.errors

        try:
            return await work()
        except (
            nats.errors.ConnectionClosedError,
            nats.errors.NoServersError,
            nats.errors.StaleConnectionError,
            nats.errors.TimeoutError,
            OSError,
            TimeoutError,
        ) as exc:
            await self.drop()
            raise self.unavailable(exc) from exc
        except nats.js.errors.ServiceUnavailableError as exc:
            raise TransportError(
                f"NATS at {_where(self.url)} answers, but without JetStream: {START_HINT}"
            ) from exc
        except nats.js.errors.APIError as exc:
            raise TransportError(
                f"NATS JetStream at {_where(self.url)} refused: {exc.description} (error "
                f"{exc.err_code}). Check that streams and consumers of these names were not "
                "made with other subjects or options"
            ) from exc

    def unavailable(self, exc: BaseException) -> BrokerUnavailableError:
        """The error that says the server cannot be reached, and how to start it."""
        return BrokerUnavailableError(
            f"NATS at {_where(self.url)} cannot be reached ({type(exc).__name__}: {exc}). "
            f"Check the URL and that the server runs; {START_HINT}. Nothing of this call "
            "may be assumed done; retry it later"
        )

    async def open(self) -> _Connection:
        """The live connection, connecting when there is none (one caller at a time)."""
        async with self.opening:
            if self.current is None or not self.current.client.is_connected:
                await self.drop()
                self.current = await self._connect()
            return self.current

    async def _connect(self) -> _Connection:
        import nats

        lost = asyncio.Event()
        inboxes: list[_AckInbox] = []

        async def on_closed() -> None:
            lost.set()
            for inbox in inboxes:
                inbox.give_up()

        async def on_error(exc: Exception) -> None:
            """Errors surface where they matter: in the call that meets them."""

        client = await nats.connect(
            self.url,
            allow_reconnect=False,
            connect_timeout=max(1, round(self.connect_timeout)),
            # nats-py still tries a server this many times (+1) when it first connects.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            closed_cb=on_closed,
            disconnected_cb=on_closed,
            error_cb=on_error,
        )
        try:
            acks = await _AckInbox.start(client)
        except BaseException:
            await client.close()
            raise
        inboxes.append(acks)
        self.generation += 1
        return _Connection(client, client.jetstream(), lost, self.generation, acks)

    async def drop(self) -> None:
        """Forget the connection, closing it if it is still open."""
        current, self.current = self.current, None
        if current is not None and not current.client.is_closed:
            with suppress(Exception):  # it is thrown away after a failure
                await current.client.close()

    def close(self) -> None:
        """Close the connection and stop the loop."""
        with suppress(TransportError, TimeoutError):
            self.loop.run(self.drop(), timeout=self.connect_timeout)
        self.loop.close()


async def ensure_stream(
    js: nats.js.JetStreamContext, stream: str, prefix: str, duplicate_window: float
) -> None:
    """Create the stream of ``<prefix>.>`` on file storage unless it exists."""
    import nats.js.api
    import nats.js.errors

    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        config = nats.js.api.StreamConfig(
            name=stream,
            subjects=[f"{prefix}.>"],
            storage=nats.js.api.StorageType.FILE,
            duplicate_window=duplicate_window,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as refused:
            try:
                await js.stream_info(stream)  # fine if another process made it first
            except nats.js.errors.NotFoundError:
                raise refused from None


@dataclass(frozen=True, slots=True)
class _NoAnswer:
    """No answer to a message in time, or one that says JetStream cannot take it now:
    transient, says nothing about the message (``Transport`` tells the kinds apart)."""

    why: str


Answer = str | None | _NoAnswer  # confirmed (None), refused (the reason), or no answer


def _refusal(reply: nats.aio.msg.Msg, subject: str) -> Answer:
    """None for a JetStream ack (a duplicate too: the stream has it), ``_NoAnswer`` for an
    answer that says JetStream cannot take messages now, else the refusal's reason."""
    if reply.headers and reply.headers.get("Status") == str(BUSY):
        return _NoAnswer(
            f"NATS answered 503 (no responders) for subject {subject!r}: either no "
            "JetStream stream stores that subject (create one, or let NatsPublisher create "
            "its stream: ensure_stream=True), or JetStream is not answering now (starting, "
            "stalled, electing a leader)"
        )
    if b'"error"' not in reply.data:  # the usual ack, {"stream":..., "seq":...}: no parse
        return None
    try:
        answer = json.loads(reply.data)
    except ValueError:
        return f"JetStream answered with something that is not JSON: {reply.data[:200]!r}"
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is None:
        return None
    description, code = error.get("description"), error.get("err_code")
    return _error_answer(error.get("code"), code, description)


def _error_answer(status: object, code: object, description: object) -> Answer:
    """The answer a JetStream error stands for: busy, a broken chain, or a refusal."""
    if status == BUSY:  # e.g. "JetStream system temporarily unavailable"
        return _NoAnswer(f"JetStream cannot take messages now: {description} (error {code})")
    if code in CHAIN_BROKEN:  # only the chain was broken (see nats_chain)
        return WrongLast(f"not stored: {description} (error {code})")
    return f"JetStream refused the message: {description} (error {code})"


class NatsPublisher:
    """The ``Transport`` port on NATS JetStream, with up to ``max_in_flight`` async acks.

    Every message waits for its JetStream ack (a duplicate inside the window counts as
    acknowledged: the stream has it). An error JetStream answers about a message is its
    refusal. No ack within ``ack_timeout``, a 503 "no responders" or a JetStream 503 is no
    answer at all: the call raises ``BrokerBusyError`` with the answers it did get, so the
    relay waits it out instead of counting attempts, and sends the rest again with the same
    ``Nats-Msg-Id`` (JetStream drops a copy it already stored). The stream is created if
    missing, unless ``ensure_stream`` is False.
    """

    messaging_system = "nats"  # named on trace spans (docs/tracing.md)

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        subject_prefix: str = DEFAULT_PREFIX,
        ensure_stream: bool = True,
        duplicate_window: float = 120.0,
        max_in_flight: int = 4000,
        ack_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        chain_waves: bool = True,
    ) -> None:
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.chain_waves = chain_waves  # several waves in one call go out as a chain
        self._unchained_until = 0.0  # a chain broke: wave by wave until then (monotonic)
        self._last_sequence: int | None = None  # the stream's, after our last fresh store
        self.ensure_stream = ensure_stream
        self.duplicate_window = duplicate_window
        self.ack_timeout = ack_timeout
        self.max_in_flight = max_in_flight
        self._link = _Link(url, "tidings-nats-publisher", connect_timeout)
        self._ready = 0  # generation of the connection that ensured the stream
        self._commands = Commands(subject_prefix, CONTENT_TYPE)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Publish and wait for every ack; per message None or the refusal reason.

        ``BrokerBusyError`` if any message got no answer (see the class docstring)."""
        # One wave: nothing in it is held back (no earlier message of the call was refused).
        return self.publish_waves([messages])  # type: ignore[return-value]

    def publish_waves(
        self, waves: Sequence[Sequence[OutgoingMessage]]
    ) -> list[str | HeldBack | None]:
        """Publish wave after wave in one call to the loop thread (``WavePublisher``)."""
        if not any(waves):
            return []
        answers = self._link.call(lambda: self._publish_waves(waves))
        unanswered = [a for a in answers if isinstance(a, _NoAnswer)]
        if unanswered:
            raise self._busy(answers, unanswered)
        return [a for a in answers if not isinstance(a, _NoAnswer)]

    async def _publish_waves(
        self, waves: Sequence[Sequence[OutgoingMessage]]
    ) -> list[Answer | HeldBack]:
        base = self._last_sequence
        if (
            not self.chain_waves
            or len(waves) < 2
            or base is None  # the stream's last sequence is not known
            or time.monotonic() < self._unchained_until
        ):
            return await self._wave_by_wave(waves, set())
        # Every message at once, each expecting the one before it (see nats_chain).
        flat = [m for wave in waves for m in wave]
        answers = await self._publish(flat, expectations(flat, base))
        resolved = resolve(waves, answers)
        if resolved.broken:
            # Another publisher writes to the stream: its messages would break the next
            # chains too, each then sent twice. Wave by wave for a while.
            self._unchained_until = time.monotonic() + CHAIN_PAUSE
        head: list[Answer | HeldBack] = [None] * resolved.confirmed
        if resolved.unanswered_from is not None:
            # JetStream is not answering: the rest is left unanswered, as wave by wave.
            missing = flat[resolved.unanswered_from + 1 :]
            return [
                *head,
                answers[resolved.unanswered_from],
                *(_NoAnswer("not sent") for _ in missing),
            ]
        if resolved.refusal is not None:
            head.append(resolved.refusal)
        return [*head, *await self._wave_by_wave(resolved.rest, resolved.held)]

    async def _wave_by_wave(
        self, waves: Sequence[Sequence[OutgoingMessage]], refused: set[str]
    ) -> list[Answer | HeldBack]:
        """Each wave once the last is answered; the later messages of an aggregate in
        ``refused`` (or refused on the way) are held back."""
        answers: list[Answer | HeldBack] = []
        for k, wave in enumerate(waves):
            sendable = [m for m in wave if m.ordering_key not in refused]
            got = iter(await self._publish(sendable) if sendable else [])
            wave_answers: list[Answer | HeldBack] = [
                next(got) if m.ordering_key not in refused else HELD_BACK for m in wave
            ]
            refused.update(
                m.ordering_key
                for m, a in zip(wave, wave_answers, strict=True)
                if isinstance(a, str)
            )
            answers.extend(wave_answers)
            if any(isinstance(a, _NoAnswer) for a in wave_answers):
                # JetStream is not answering: the later waves are not sent.
                answers.extend(_NoAnswer("not sent") for later in waves[k + 1 :] for _ in later)
                break
        return answers

    def _busy(
        self, answers: Sequence[Answer | HeldBack], unanswered: list[_NoAnswer]
    ) -> BrokerBusyError:
        answered: dict[int, str | None] = {
            i: a for i, a in enumerate(answers) if a is None or isinstance(a, str)
        }
        return BrokerBusyError(
            f"NATS JetStream at {_where(self._link.url)} left {len(unanswered)} of "
            f"{len(answers)} messages unanswered ({unanswered[0].why}). A transient "
            "outage, not a refusal: they are published again after a pause, with the same "
            "Nats-Msg-Id so JetStream drops a copy it already stored",
            answered,
        )

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        self._link.close()

    async def _connect(self) -> _Connection:
        connection = await self._link.open()
        if self.ensure_stream and self._ready != connection.generation:
            await ensure_stream(
                connection.js, self.stream, self.subject_prefix, self.duplicate_window
            )
            self._ready = connection.generation
        return connection

    async def _publish(
        self, messages: Sequence[OutgoingMessage], expected: Sequence[Expected] | None = None
    ) -> list[Answer]:
        """Each message's answer; with ``expected``, what each message expects of the
        stream's last message (a chain: ``nats_chain``)."""
        connection = await self._connect()
        answers: list[Answer] = []
        # Chunks of the async window, each settled before the next: a send then never
        # waits for a free slot, which could wait forever once the connection is lost.
        for start in range(0, len(messages), self.max_in_flight):
            end = start + self.max_in_flight
            chunk_expected = expected[start:end] if expected is not None else None
            answers.extend(
                await self._publish_chunk(connection, messages[start:end], chunk_expected)
            )
            if any(isinstance(a, _NoAnswer) for a in answers):
                # JetStream is not answering: the rest is not sent, only left unanswered.
                answers.extend(_NoAnswer("not sent") for _ in messages[len(answers) :])
                break
        return answers

    async def _publish_chunk(
        self,
        connection: _Connection,
        messages: Sequence[OutgoingMessage],
        expected: Sequence[Expected] | None = None,
    ) -> list[Answer]:
        client = connection.client
        if self._commands.prefix != self.subject_prefix:
            self._commands = Commands(self.subject_prefix, CONTENT_TYPE)
        reasons: list[Answer] = [None] * len(messages)
        acks = _Acks(len(messages))
        ready: list[_Ready] = []
        for i, message in enumerate(messages):
            expect = expected[i] if expected is not None else None
            try:
                subject = self._commands.subject(message.routing_key)
                head = self._commands.header_block(message.headers, message.message_id, expect)
            except WireError as exc:
                reasons[i] = str(exc)
            else:
                reasons[i] = _oversize(len(head) + len(message.body), client.max_payload)
            if reasons[i] is None:
                reply = connection.acks.expect(acks, i)
                ready.append((subject, reply, head, message, expect))
            else:
                acks.missing -= 1  # refused here: no answer to wait for
        await _send_ready(client, ready)
        if acks.missing:
            await self._settle(acks, connection.lost)
        connection.acks.forget(acks)
        # The stream's last sequence, as far as this publisher knows: a chain starts there.
        self._last_sequence = stored_sequence(acks.replies[-1].data if acks.replies[-1] else b"")
        for i, answer in enumerate(acks.replies):
            if reasons[i] is None:
                reasons[i] = self._reason(answer, messages[i])
        return reasons

    def _reason(self, reply: nats.aio.msg.Msg | None, message: OutgoingMessage) -> Answer:
        if reply is None:
            return _NoAnswer(
                f"no acknowledgement within ack_timeout {self.ack_timeout:g} s: the server "
                "is stalled, overloaded, writing to a slow disk or electing a leader"
            )
        return _refusal(reply, f"{self.subject_prefix}.{message.routing_key}")

    async def _settle(self, acks: _Acks, lost: asyncio.Event) -> None:
        """Wait for every ack, or until the connection is lost or the time is up.

        One future that the answers, the loss of the connection and a timer all resolve:
        this runs for every publish, where two tasks and ``asyncio.wait`` cost more than
        the rest of the call.
        """
        if not lost.is_set():
            timer = asyncio.get_running_loop().call_later(self.ack_timeout, acks.stop_waiting)
            try:
                await acks.complete
            finally:
                timer.cancel()
        if acks.missing and lost.is_set():
            raise ConnectionError("the connection closed before JetStream acknowledged")


_Ready = tuple[bytes, str, bytes, OutgoingMessage, Expected | None]  # subject, reply, head...


async def _send_ready(client: nats.aio.client.Client, ready: Sequence[_Ready]) -> None:
    """Send the messages ready to go: their commands in one write, or through nats-py's
    ``publish``, a message at a time, where that cannot be done (see nats_wire)."""
    if ready and can_send_raw(client):
        commands = [hpub(subject, reply, head, m.body) for subject, reply, head, m, _ in ready]
        await send(client, commands, sum(len(m.body) for _, _, _, m, _ in ready))
        return
    for subject, reply, _, m, expect in ready:
        headers = {**m.headers, "Nats-Msg-Id": m.message_id, **expectation_headers(expect)}
        headers["Content-Type"] = CONTENT_TYPE
        await client.publish(subject.decode(), m.body, reply, headers)


def _oversize(size: int, max_payload: int) -> str | None:
    """The refusal of a message larger than the server takes (``size``: header block and
    body), before it is sent.

    nats-py would raise for the whole call, and counts only the body; checking here,
    headers included, makes it this message's refusal alone.
    """
    if size <= max_payload:
        return None
    return (
        f"message of {size} bytes (with headers) is larger than the NATS server's "
        f"max_payload of {max_payload} bytes"
    )


# After a crash, messages the dead consumer held (or its last pull took) come back only
# once their ack_wait has run out, in no known order among themselves. A new subscription
# that finds messages out holds every message for ack_wait + RECOVERY_GRACE: by then each
# of those has come back and been fetched, and so recorded in flight by the consumer,
# whose own hold then keeps each aggregate's order (see docs/inbox.md, "Order").
RECOVERY_GRACE = 2.0
RECOVERY_HOLD = 0.5  # seconds a held message waits per round
PULL_EXPIRY_WAIT = 5.0  # seconds a new subscription waits for dead pull requests to expire


@dataclass(frozen=True, slots=True)
class _Recovery:
    """An earlier holder's messages are out: every message is held until the monotonic
    time ``until``."""

    until: float


@dataclass(frozen=True, slots=True)
class _Token:
    generation: int
    message: nats.aio.msg.Msg


def _delivered(message: nats.aio.msg.Msg) -> int:
    """How many times JetStream delivered the message, read off its ack subject.

    ``message.metadata`` parses every field (a datetime among them) at about 9 µs a
    message, a twentieth of the consumer's work on one; only this count is needed. The
    two layouts: ``$JS.ACK.<stream>.<consumer>.<delivered>...`` (9 tokens) and, with a
    domain and an account hash, ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>
    ...`` (11 or 12); anything else goes through nats-py's own parser."""
    tokens = (message.reply or "").split(".")
    field = 4 if len(tokens) == 9 else 6 if len(tokens) >= 11 else 0
    if field and tokens[0] == "$JS" and tokens[1] == "ACK" and tokens[field].isdigit():
        return int(tokens[field])
    return int(message.metadata.num_delivered)


async def _nak_all(messages: Sequence[nats.aio.msg.Msg]) -> None:
    """NAK each message, so JetStream delivers it again at once."""
    for message in messages:
        with suppress(Exception):  # JetStream redelivers after ack_wait anyway
            await message.nak()


class NatsSubscription:
    """The ``Subscription`` port on a durable JetStream pull consumer with explicit acks.

    The consumer ``durable`` of ``stream`` is created on first use with ``filter_subject`` (a
    subject pattern after the prefix: ``>`` for everything, ``order.*``, ...), ``ack_wait``
    (seconds before an unacked message is delivered again) and ``max_deliver`` (-1: no
    limit); an existing consumer is used as it is. On ``close`` the messages fetched but
    not settled are negatively acknowledged, so the next subscriber gets them at once.
    """

    messaging_system = "nats"  # named on trace spans (docs/tracing.md)

    def __init__(
        self,
        url: str,
        durable: str,
        *,
        stream: str = DEFAULT_STREAM,
        subject_prefix: str = DEFAULT_PREFIX,
        filter_subject: str = ">",
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        duplicate_window: float = 120.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.durable = durable
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.filter_subject = filter_subject
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.duplicate_window = duplicate_window
        self._link = _Link(url, f"tidings-nats-{durable}", connect_timeout)
        self._pull: Any = None  # the JetStream PullSubscription of the current connection
        self._puller: Puller | None = None  # its pull requests, answered into our inbox
        self._pull_generation = 0
        self._held: dict[int, nats.aio.msg.Msg] = {}
        self._recovery: _Recovery | None = None

    def fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` for the first."""
        return self._link.call(lambda: self._fetch(max_messages, timeout))

    def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Acknowledge; messages of a lost connection come again anyway and are skipped."""
        if messages:
            self._link.call(lambda: self._settle(messages, None))

    def retry_later(self, message: IncomingMessage, delay: float) -> None:
        """Negatively acknowledge with a delay: JetStream delivers it again after ``delay``."""
        self._link.call(lambda: self._settle([message], max(delay, 0.0)))

    def give_back(self, messages: Sequence[IncomingMessage]) -> None:
        """NAK the messages without a delay, in the order fetched: JetStream delivers
        them again before new ones."""
        if messages:
            with suppress(TransportError, TimeoutError):
                self._link.call(lambda: self._give_back_batch(messages))

    def close(self) -> None:
        """Hand the unsettled messages back (NAK), close the connection, stop the loop."""
        with suppress(TransportError, TimeoutError):
            self._link.call(self._give_back, timeout=self._link.connect_timeout)
        self._link.close()

    async def _subscription(self) -> Any:
        import nats.js.api

        connection = await self._link.open()
        if self._pull is not None and self._pull_generation == connection.generation:
            return self._pull
        await ensure_stream(connection.js, self.stream, self.subject_prefix, self.duplicate_window)
        subject = f"{self.subject_prefix}.{self.filter_subject}"
        config = nats.js.api.ConsumerConfig(
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
        )
        self._pull = await connection.js.pull_subscribe(
            subject, durable=self.durable, stream=self.stream, config=config
        )
        self._puller = await Puller.start(connection.client, self.stream, self.durable)
        self._pull_generation = connection.generation
        self._held.clear()
        info = await self._settled_info(self._pull)
        if info.num_ack_pending:
            ack_wait = (info.config.ack_wait if info.config else None) or self.ack_wait
            self._recovery = _Recovery(time.monotonic() + ack_wait + RECOVERY_GRACE)
            log.warning(
                "consumer %s: %d messages were out with an earlier holder (a crashed "
                "consumer); every message waits %.0f s for them to come back, so that each "
                "aggregate's events are handled in order",
                self.durable,
                info.num_ack_pending,
                ack_wait + RECOVERY_GRACE,
            )
        return self._pull

    async def _settled_info(self, pull: Any) -> Any:
        """The consumer's info once no pull request of an earlier holder waits any more.

        A killed consumer's pull request stays with the server until it expires, and may
        still take messages then, which no process sees; counted only after it expired,
        they are among the messages out (``num_ack_pending``) and below ``delivered``."""
        deadline = time.monotonic() + PULL_EXPIRY_WAIT
        info = await pull.consumer_info()
        while info.num_waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            info = await pull.consumer_info()
        return info

    async def _fetch(self, max_messages: int, timeout: float) -> list[IncomingMessage]:
        await self._subscription()
        puller, current = self._puller, self._link.current
        assert puller is not None  # noqa: S101 - just made
        assert current is not None  # noqa: S101 - just made
        received = puller.take_arrived(max_messages)
        if len(received) < max_messages:  # what is there now, at once
            received += await puller.pull(
                max_messages - len(received), wait=None, lost=current.lost
            )
        if not received:  # nothing: wait for the first, then take what came with it
            received = await puller.pull(1, wait=max(timeout, 0.01), lost=current.lost)
            if received and max_messages > 1:
                received += await puller.pull(max_messages - 1, wait=None, lost=current.lost)
        self._held.update((id(m), m) for m in received)
        recovering = self._recovery is not None and time.monotonic() < self._recovery.until
        if not recovering:
            self._recovery = None
        return [self._incoming(m, recovering) for m in received]

    def _incoming(self, message: nats.aio.msg.Msg, hold: bool = False) -> IncomingMessage:
        headers = dict(message.headers or {})
        return IncomingMessage(
            body=message.data,
            message_id=headers.get("Nats-Msg-Id"),
            delivery_count=_delivered(message),
            token=_Token(self._pull_generation, message),
            headers=headers,
            hold=RECOVERY_HOLD if hold else 0.0,
        )

    async def _settle(self, messages: Sequence[IncomingMessage], delay: float | None) -> None:
        import nats.errors

        current = self._link.current
        for message in messages:
            token = message.token
            if not isinstance(token, _Token):
                raise TransportError("this message was not fetched from a NatsSubscription")
            if current is None or token.generation != current.generation:
                continue  # its connection is gone: JetStream delivers it again by itself
            self._held.pop(id(token.message), None)
            with suppress(nats.errors.MsgAlreadyAckdError):
                if delay is None:
                    await token.message.ack()
                else:
                    await token.message.nak(delay=delay)
        # The client writes them out on its next turn, without waiting for a round trip:
        # an ack lost with a crash only means a redelivery, which the inbox skips.

    async def _give_back_batch(self, messages: Sequence[IncomingMessage]) -> None:
        """NAK ``messages``, then any that came late for a pull and were not handed out:
        handed out first by the next fetch, they would come before the batch."""
        await self._settle(messages, 0.0)
        await _nak_all(self._late())

    async def _give_back(self) -> None:
        held = [*self._held.values(), *self._late()]  # late ones are out with us too
        self._held = {}
        if self._link.current is None or not held:
            return
        await _nak_all(held)
        await self._link.current.client.flush()

    def _late(self) -> list[nats.aio.msg.Msg]:
        """The messages that came late for a pull and were not handed out (now taken)."""
        return self._puller.take_arrived() if self._puller is not None else []
