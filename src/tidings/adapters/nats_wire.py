"""The NATS protocol's publish commands, built for a whole chunk of messages at once.

nats-py's ``Client.publish`` checks the subject with a regular expression, builds the
header block key by key (a regular expression, ``strip`` and ``translate`` for each), and
hands each command to its buffer on its own: about a third of the publisher's processor
time per message, measured on the relay's loop thread. The publisher's subjects come
from a handful of event types and its header names from a fixed set, so they are checked
once and remembered; values are cleaned the way nats-py cleans them, and only when they
need it. The chunk's commands then go to nats-py's pending buffer as one write.

Only ``Client._send_command``, ``Client._flush_queue`` and ``Client._flush_pending`` are
used beyond the public API (nats-py 2.x). If an installed nats-py lacks them, or the
client is not connected, each message goes through ``Client.publish`` as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tidings.adapters.nats_chain import (
    EXPECTED_LAST_MSG_ID,
    EXPECTED_LAST_SEQUENCE,
    Expected,
    expectation_headers,
)

if TYPE_CHECKING:
    import nats.aio.client

_SUBJECT_BAD = re.compile(r"[\s*>]|^\.|\.$|\.\.")  # wildcards and empty tokens too
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 7230 token
_VALUE_NEEDS_CLEANING = re.compile(r"[\r\n]|^\s|\s$")
_NEWLINES_TO_SPACES = str.maketrans({"\r": " ", "\n": " "})
_KNOWN_LIMIT = 4096  # subjects and header names remembered at most (a custom encoder's)
_EXPECTED_ID = f"\r\n{EXPECTED_LAST_MSG_ID}: ".encode()
_EXPECTED_SEQUENCE = f"\r\n{EXPECTED_LAST_SEQUENCE}: ".encode()


class WireError(ValueError):
    """A subject or header name that NATS cannot carry; the message is refused."""


class Commands:
    """Builds ``HPUB`` commands to subjects ``<prefix>.<routing key>``."""

    def __init__(self, prefix: str, content_type: str) -> None:
        self.prefix, self.content_type = prefix, content_type
        self._subjects: dict[str, bytes] = {}
        self._names: dict[str, str] = {}
        self._tail = f"\r\nContent-Type: {content_type}\r\n\r\n".encode()

    def header_block(
        self,
        headers: Mapping[str, str],
        message_id: str,
        expect: Expected | None = None,
    ) -> bytes:
        """The header block of a message: its own ``headers``, then ``Nats-Msg-Id`` (for
        JetStream's duplicate window), what it ``expect``s of the stream's last message
        in a chain (its id, if any, and its sequence: ``nats_chain``), and
        ``Content-Type``. Most messages have no headers of their own, and only their ids
        need looking at."""
        if headers:
            block = {**headers, "Nats-Msg-Id": message_id, **expectation_headers(expect)}
            return self.headers({**block, "Content-Type": self.content_type})
        head = b"NATS/1.0\r\nNats-Msg-Id: " + _clean(message_id).encode()
        if expect is not None:
            if expect[0] is not None:
                head += _EXPECTED_ID + _clean(expect[0]).encode()
            head += _EXPECTED_SEQUENCE + b"%d" % expect[1]
        return head + self._tail

    def subject(self, routing_key: str) -> bytes:
        """The encoded subject of ``routing_key``, or ``WireError`` saying why there is none."""
        known = self._subjects.get(routing_key)
        if known is not None:
            return known
        subject = f"{self.prefix}.{routing_key}"
        if not routing_key or _SUBJECT_BAD.search(subject):
            raise WireError(
                f"subject {subject!r} cannot be published to: NATS subjects are "
                "dot-separated tokens without spaces, empty tokens or wildcards ('*', '>')"
            )
        return _remember(self._subjects, routing_key, subject.encode())

    def headers(self, headers: Mapping[str, str]) -> bytes:
        """The ``NATS/1.0`` header block of ``headers``, as nats-py writes it: names
        stripped (an empty one left out), values stripped with line breaks made spaces."""
        lines = ["NATS/1.0"]
        for name, value in headers.items():
            key = self._names.get(name)
            if key is None:
                key = self._name(name)
            if not key:
                continue
            lines.append(f"{key}: {_clean(value)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode()

    def _name(self, name: str) -> str:
        key = name.strip()
        if key and not _HEADER_NAME.fullmatch(key):
            raise WireError(
                f"header name {name!r} cannot be sent to NATS: use letters, digits and "
                "!#$%&'*+-.^_`|~ only"
            )
        return _remember(self._names, name, key)


V = TypeVar("V")


def _remember(known: dict[str, V], key: str, value: V) -> V:
    """Keep ``value`` under ``key``; forget everything first once ``_KNOWN_LIMIT`` are
    kept, so a custom encoder's endless routing keys cannot grow it without bound."""
    if len(known) >= _KNOWN_LIMIT:
        known.clear()
    known[key] = value
    return value


def _clean(value: str) -> str:
    """A header value as nats-py sends it: stripped, line breaks made spaces."""
    if _VALUE_NEEDS_CLEANING.search(value):
        return value.strip().translate(_NEWLINES_TO_SPACES)
    return value


def hpub(subject: bytes, reply: str, head: bytes, body: bytes) -> bytes:
    """One ``HPUB`` command: the protocol line, the header block and the payload."""
    line = b"HPUB %s %s %d %d\r\n" % (subject, reply.encode(), len(head), len(head) + len(body))
    return b"".join((line, head, body, b"\r\n"))


def can_send_raw(client: nats.aio.client.Client) -> bool:
    """Whether ``send`` may write commands to ``client``'s buffer itself."""
    return (
        client.is_connected
        and not client.is_draining_pubs
        and callable(getattr(client, "_send_command", None))
        and callable(getattr(client, "_flush_pending", None))
        and hasattr(client, "_flush_queue")
    )


async def send(client: nats.aio.client.Client, commands: Sequence[bytes], size: int) -> None:
    """Hand ``commands`` (``size`` bytes of payload in all) to ``client`` as one write and
    have its flusher send them, as ``Client.publish`` does for each (``can_send_raw``
    must hold)."""
    raw: Any = client
    await raw._send_command(b"".join(commands))
    raw.stats["out_msgs"] += len(commands)
    raw.stats["out_bytes"] += size
    if raw._flush_queue is not None and raw._flush_queue.empty():
        await raw._flush_pending()
