"""RecordingTransport: a fake broker for relay tests that you can make refuse, fall
silent or fail."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence

from tidings.errors import BrokerBusyError, BrokerUnavailableError
from tidings.ports import OutgoingMessage
from tidings.records import EventRecord


def plain_message(record: EventRecord) -> OutgoingMessage:
    """A small JSON message for tests (the real wire format is CloudEvents)."""
    body = json.dumps(
        {"id": record.event_id, "subject": record.stream_id, "version": record.version}
    ).encode()
    return OutgoingMessage(record.event_id, record.event_type, record.stream_id, body)


class RecordingTransport:
    """Keeps every message it confirms, in order; ``refuse``, ``silent`` and ``down`` make
    it fail.

    ``refuse(message) -> reason | None`` decides per message (a permanent refusal);
    ``silent(message) -> bool`` leaves a message unanswered, as a stalled broker does: the
    call then raises ``BrokerBusyError`` whose ``answered`` holds the other messages'
    answers, and the silent message is not kept. ``down = True`` makes every publish raise
    ``BrokerUnavailableError`` (as a broker outage does). Thread-safe, so several relays
    may share one.
    """

    def __init__(
        self,
        refuse: Callable[[OutgoingMessage], str | None] | None = None,
        silent: Callable[[OutgoingMessage], bool] | None = None,
    ) -> None:
        self.refuse = refuse or (lambda message: None)
        self.silent = silent or (lambda message: False)
        self.down = False
        self.confirmed: list[OutgoingMessage] = []
        self.attempts: list[str] = []
        self.unanswered = 0
        self._lock = threading.Lock()

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Confirm or refuse each message, or leave it unanswered; raise while ``down``."""
        if self.down:
            raise BrokerUnavailableError("the test broker is down")
        answered: dict[int, str | None] = {}
        with self._lock:
            for index, message in enumerate(messages):
                self.attempts.append(message.message_id)
                if self.silent(message):
                    self.unanswered += 1
                    continue
                reason = self.refuse(message)
                if reason is None:
                    self.confirmed.append(message)
                answered[index] = reason
        if len(answered) < len(messages):
            raise BrokerBusyError(
                f"the test broker left {len(messages) - len(answered)} messages unanswered",
                answered,
            )
        return [answered[i] for i in range(len(messages))]

    def ids(self) -> list[str]:
        """Ids of the confirmed messages, in confirmation order."""
        with self._lock:
            return [m.message_id for m in self.confirmed]

    def close(self) -> None:
        """Nothing to release."""
