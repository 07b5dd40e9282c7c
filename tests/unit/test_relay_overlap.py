"""A relay on a transport that publishes on a thread of its own (``WaveStarter``) encodes
the next call's messages while the broker answers the current one, and still sends
nothing of an aggregate after an event of it was refused."""

from __future__ import annotations

from collections.abc import Sequence

import tidings
from tidings.ports import HELD_BACK, HeldBack, OutgoingMessage
from tidings.records import EventRecord
from tidings.testing import RecordingTransport, plain_message
from tidings.testing.contract import Counted, Counter


class StartingTransport(RecordingTransport):
    """Publishes waves when the answers are asked for, and writes each step to ``log``."""

    def __init__(self, log: list[str], refused: set[str]) -> None:
        super().__init__(refuse=lambda m: "refused" if m.message_id in refused else None)
        self.log = log

    def publish_waves(
        self, waves: Sequence[Sequence[OutgoingMessage]]
    ) -> list[str | HeldBack | None]:
        return self.start_waves(waves).result()

    def start_waves(self, waves: Sequence[Sequence[OutgoingMessage]]) -> _Pending:
        self.log.append("start")
        return _Pending(self, waves)


class _Pending:
    def __init__(self, transport: StartingTransport, waves: Sequence[Sequence[OutgoingMessage]]):
        self.transport, self.waves = transport, waves

    def result(self) -> list[str | HeldBack | None]:
        self.transport.log.append("answers")
        answers: list[str | HeldBack | None] = []
        refused: set[str] = set()
        for wave in self.waves:
            sendable = [m for m in wave if m.ordering_key not in refused]
            got = iter(self.transport.publish(sendable))
            for message in wave:
                answer = next(got) if message.ordering_key not in refused else HELD_BACK
                if isinstance(answer, str):
                    refused.add(message.ordering_key)
                answers.append(answer)
        return answers


def test_the_next_call_is_encoded_while_the_broker_answers_and_a_refusal_still_holds_back() -> None:
    """Aggregates a and b, three events each, one wave per call: a's first event is
    refused in the first call, while a's second was already encoded for the next call. It
    is not sent (nor a's third); b's events all go, and every call but the first was
    encoded between the start of the call before it and its answers."""
    store = tidings.connect("memory://", outbox=True, registry=tidings.EventRegistry([Counted]))
    for name in ("a", "b"):
        counter = Counter(name)
        for step in range(3):
            counter.increment(step)
        with store.unit_of_work() as uow:
            uow.track(counter)
    ids = {(r.stream_id, r.version): r.event_id for s in "ab" for r in store.events.read_stream(s)}
    log: list[str] = []

    def encode(record: EventRecord) -> OutgoingMessage:
        log.append(f"encode {record.stream_id}{record.version}")
        return plain_message(record)

    transport = StartingTransport(log, refused={ids[("a", 1)]})
    relay = store.relay(transport, encode, publish_chunk=2)
    relay.run_once()
    relay.release()
    sent = {key for key, event_id in ids.items() if event_id in transport.attempts}
    assert sent == {("a", 1), ("b", 1), ("b", 2), ("b", 3)}
    assert log == [
        "encode a1",
        "encode b1",
        "start",
        "encode a2",  # encoded before the first call's answers: a was not refused yet
        "encode b2",
        "answers",
        "start",
        "encode b3",  # a is held back by now: its third event is not even encoded
        "answers",
        "start",
        "answers",
    ]
