"""``tidings trace EVENT_ID``: where one event is, in the writer's database and in a
consumer's: written, published (or dead-lettered), and handled by which handlers after how
many attempts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.application.handling import Delivery, Handlers
from tidings.application.unit_of_work import UnitOfWork
from tidings.serialization.cloudevents import from_message
from tidings.testing import RecordingTransport
from tidings.testing.contract import Counted, Counter, new_id

from .cli import run_cli

REGISTRY = [Counted]


def written(store: tidings.Store) -> tuple[str, Counter]:
    """Record one Counted event; return its id and its aggregate."""
    counter = Counter(new_id("cart"))
    counter.increment(1)
    with store.unit_of_work() as uow:
        uow.track(counter)
    return uow.published[0].event_id, counter


def handle_twice(store: tidings.Store, body: bytes, *steady: str) -> None:
    """``store``'s inbox handles the message twice: handler ``flaky`` fails the first
    time (the card service timed out) and succeeds the second; the ``steady`` ones
    always succeed."""
    failures = [RuntimeError("the card service timed out")]

    def flaky(event: Counted, uow: UnitOfWork) -> None:
        if failures:
            raise failures.pop()

    handlers = Handlers()
    handlers.add(Counted, "flaky", flaky)
    for name in steady:
        handlers.add(Counted, name, lambda event, uow: None)
    processor = store.processor(handlers)
    for _ in range(2):
        processor.process([Delivery(body, from_message(body))])


def test_trace_follows_an_event_from_the_writer_to_the_handlers_of_a_consumer(
    tmp_path: Path,
) -> None:
    """A's database says where the event was written and when it was published; B's says
    that ``flaky`` processed it after two attempts and ``steady`` after one."""
    a_url, b_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    a = tidings.connect(a_url, outbox=True, registry=tidings.EventRegistry(REGISTRY))
    b = tidings.connect(b_url, registry=tidings.EventRegistry(REGISTRY))
    try:
        event_id, counter = written(a)
        out = RecordingTransport()
        relay = a.relay(out)
        assert relay.run_once() == 1
        relay.release()
        handle_twice(b, out.confirmed[0].body, "steady")
    finally:
        a.close()
        b.close()

    done = run_cli("trace", event_id, "--db", a_url, "--db", b_url, "--json")
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)["databases"]
    assert first["written"]["stream_id"] == counter.id
    assert first["written"]["position"] == 1
    assert first["outbox"]["published"] is True
    assert first["outbox"]["published_at"]
    assert first["handled"] == []
    assert second["written"] is None
    handled = {h["handler"]: h for h in second["handled"]}
    assert (handled["flaky"]["status"], handled["flaky"]["attempts"]) == ("processed", 2)
    assert (handled["steady"]["status"], handled["steady"]["attempts"]) == ("processed", 1)

    text = run_cli("trace", event_id, "--db", a_url, "--inbox-db", b_url)
    assert text.returncode == 0, text.stderr
    assert f"to stream {counter.id} version 1, position 1" in text.stdout
    assert "outbox: published at" in text.stdout
    assert "handler flaky: processed at" in text.stdout
    assert "after 2 attempts" in text.stdout


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A URL and schema of a fresh database (SQLite file, or a PostgreSQL schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", "public"
    else:
        yield request.getfixturevalue("pg_url"), request.getfixturevalue("schema")


def test_trace_shows_a_dead_lettered_event_with_its_attempts_and_reason(
    database: tuple[str, str],
) -> None:
    """An event the broker refused until the relay gave up: a dead letter, with the
    attempts and the broker's reason."""
    url, schema = database
    options: dict[str, Any] = {"schema": schema} if url.startswith("postgresql") else {}
    store = tidings.connect(url, outbox=True, registry=tidings.EventRegistry(REGISTRY), **options)
    try:
        event_id, _ = written(store)
        relay = store.relay(
            RecordingTransport(refuse=lambda m: "no queue is bound"), max_attempts=1
        )
        relay.run_once()
        relay.release()
    finally:
        store.close()
    done = run_cli("trace", event_id, "--db", url, "--schema", schema)
    assert done.returncode == 0, done.stderr
    assert "outbox: dead letter since" in done.stdout
    assert "after 1 attempts: no queue is bound" in done.stdout


def test_an_unknown_or_malformed_id_or_a_missing_file_is_said_in_one_line(
    tmp_path: Path,
) -> None:
    """An id no database has: exit 1 naming the databases searched. A malformed id or a
    SQLite file that is not there: exit 2, one line saying what to fix, no traceback."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    tidings.connect(url, outbox=True).close()
    unknown = run_cli("trace", "0190aaaa-0000-7000-8000-000000000000", "--db", url)
    assert unknown.returncode == 1
    assert "is in none of these databases" in unknown.stdout
    for args, said in [
        (("trace", " abc\t", "--db", url), "begins or ends with spaces"),
        (("trace", "x" * 300, "--db", url), "300 characters long"),
        (("trace", "abc", "--db", f"sqlite:///{tmp_path / 'typo.db'}"), "there is no file"),
    ]:
        done = run_cli(*args)
        assert done.returncode == 2, done.stdout
        assert said in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "typo.db").exists()
