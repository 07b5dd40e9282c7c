"""Pull requests to a JetStream pull consumer, answered into an inbox of our own.

nats-py's ``PullSubscription.fetch`` waits for each message of a batch with a task, a
``wait_for`` and a uuid of its own: measured here, a fetch of 500 and the acks cost about
41 µs of processor time a message, against 16 µs when the messages of a pull request are
gathered by a callback, as here. The protocol is JetStream's own (``$JS.API.CONSUMER.MSG.
NEXT.<stream>.<consumer>`` with ``batch``, and ``no_wait`` or ``expires``); the consumer
itself is still made or bound by nats-py (``pull_subscribe``).

A request ends when its batch is complete, or with a status message: ``404`` (no
messages now), ``408`` (its ``expires`` ran out), ``409`` (the server refused it: the
reason is raised). ``100`` (an idle heartbeat) is skipped. Each request has a reply
subject of its own, which its status messages carry, so the end of a request no longer
waited for does not end the next one. Messages carry their own subject: one that arrives
while no request waits is kept (``arrived``) and handed out first by the next pull,
never dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from typing import TYPE_CHECKING, Any

from tidings.errors import TransportError

if TYPE_CHECKING:
    import nats.aio.client
    import nats.aio.msg

API_PREFIX = "$JS.API"
NO_MESSAGES, REQUEST_TIMEOUT, IDLE_HEARTBEAT = "404", "408", "100"
ANSWER_MARGIN = 2.0  # seconds past a request's own time before the server is given up on


class _Request:
    """One pull request in flight: what it asked for and what has come."""

    __slots__ = ("batch", "done", "messages", "refusal", "token")

    def __init__(self, token: str, batch: int, done: asyncio.Future[None]) -> None:
        self.token, self.batch, self.done = token, batch, done
        self.messages: list[nats.aio.msg.Msg] = []
        self.refusal = ""

    def finish(self, refusal: str = "") -> None:
        self.refusal = refusal
        if not self.done.done():
            self.done.set_result(None)


class Puller:
    """The pull requests of one durable pull consumer on one connection (one at a time)."""

    def __init__(self, client: nats.aio.client.Client, stream: str, durable: str) -> None:
        self.client = client
        self.subject = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.inbox = client.new_inbox() + "."
        self.arrived: deque[nats.aio.msg.Msg] = deque()  # of requests no longer waited for
        self._tokens = itertools.count()
        self._current: _Request | None = None

    @classmethod
    async def start(cls, client: nats.aio.client.Client, stream: str, durable: str) -> Puller:
        """A puller whose inbox is subscribed on ``client``."""
        puller = cls(client, stream, durable)
        await client.subscribe(puller.inbox + "*", cb=puller._on_message)
        return puller

    def take_arrived(self, most: int | None = None) -> list[nats.aio.msg.Msg]:
        """Up to ``most`` (all by default) of the messages that came while no request
        waited, oldest first; they are the caller's from now on."""
        count = len(self.arrived) if most is None else min(most, len(self.arrived))
        return [self.arrived.popleft() for _ in range(count)]

    async def pull(
        self, batch: int, *, wait: float | None, lost: asyncio.Event
    ) -> list[nats.aio.msg.Msg]:
        """Up to ``batch`` messages: what is there now (``wait`` None), or else as soon as
        one came within ``wait`` seconds. ``ConnectionError`` when the connection is lost
        (``lost``) or the server does not answer; ``TransportError`` for a refusal."""
        request = _Request(
            str(next(self._tokens)), batch, asyncio.get_running_loop().create_future()
        )
        body: dict[str, Any] = {"batch": batch}
        if wait is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(wait * 1e9)
        self._current = request
        try:
            await self.client.publish(
                self.subject, json.dumps(body).encode(), reply=self.inbox + request.token
            )
            if not request.done.done():
                await _until(request.done, lost, (wait or 0.0) + ANSWER_MARGIN)
        finally:
            self._current = None
        if request.refusal:
            raise TransportError(
                f"NATS JetStream refused a pull request for {self.subject.rsplit('.', 2)[-1]}: "
                f"{request.refusal}"
            )
        if not request.done.done() and not request.messages:
            raise ConnectionError("NATS JetStream did not answer a pull request")
        return request.messages

    async def _on_message(self, message: nats.aio.msg.Msg) -> None:
        request = self._current
        status = message.headers.get("Status") if message.headers else None
        if status is None:
            # A message carries its own subject, not the request's: it is the current
            # request's, or one that came late (kept, the next pull hands it out first).
            if request is None or len(request.messages) >= request.batch:
                self.arrived.append(message)
                return
            request.messages.append(message)
            if len(request.messages) >= request.batch:
                request.finish()
            return
        if request is None or message.subject[len(self.inbox) :] != request.token:
            return  # the end of a request no longer waited for
        if status in (NO_MESSAGES, REQUEST_TIMEOUT):
            request.finish()
        elif status != IDLE_HEARTBEAT:
            description = (message.headers or {}).get("Description", "")
            request.finish(f"{status} {description}".strip())


async def _until(done: asyncio.Future[None], lost: asyncio.Event, timeout: float) -> None:
    """Wait for ``done``, the loss of the connection or ``timeout``, whichever is first."""
    if lost.is_set():
        raise ConnectionError("the NATS connection is lost")
    losing: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
    waiting: set[asyncio.Future[Any]] = {done, losing}
    try:
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        losing.cancel()
    if lost.is_set() and not done.done():
        raise ConnectionError("the NATS connection was lost during a pull request")
