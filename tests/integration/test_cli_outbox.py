"""``tidings outbox``: status and dead letters, operated from the command line."""

from __future__ import annotations

from pathlib import Path

import tidings
from tidings.testing import RecordingTransport, plain_message
from tidings.testing.contract import Counted, Counter

from .cli import run_cli


def dead_lettered(path: Path) -> tuple[str, str]:
    """An outbox with one dead letter (event 1 of c-1) holding back event 2."""
    with tidings.connect(
        f"sqlite:///{path}", registry=tidings.EventRegistry([Counted]), outbox=True
    ) as store:
        counter = Counter("c-1")
        counter.increment()
        counter.increment()
        with store.unit_of_work() as uow:
            uow.track(counter)
        first, second = (e.event_id for e in store.read_stream("c-1"))
        transport = RecordingTransport(lambda m: "poison" if m.message_id == first else None)
        relay = store.relay(transport, plain_message, max_attempts=1)
        relay.run_once()
        relay.release()
        assert transport.ids() == []
    return first, second


def test_status_and_dead_letters_show_what_is_stuck(tmp_path: Path) -> None:
    """status counts the backlog and dead letters; dead-letters lists the error."""
    db = f"sqlite:///{tmp_path / 'o.db'}"
    first, _ = dead_lettered(tmp_path / "o.db")
    status = run_cli("outbox", "status", "--db", db)
    assert status.returncode == 0, status.stderr
    assert "backlog 1 event(s)" in status.stdout
    assert "1 dead letter(s)" in status.stdout
    listing = run_cli("outbox", "dead-letters", "--db", db)
    assert first in listing.stdout
    assert "poison" in listing.stdout


def test_retry_puts_a_dead_letter_back_in_order(tmp_path: Path) -> None:
    """After retry the relay publishes the dead letter and then the event behind it."""
    path = tmp_path / "o.db"
    first, second = dead_lettered(path)
    result = run_cli("outbox", "retry", "--db", f"sqlite:///{path}", first)
    assert "1 dead letter(s) back in the outbox" in result.stdout
    with tidings.connect(
        f"sqlite:///{path}", registry=tidings.EventRegistry([Counted]), outbox=True
    ) as store:
        transport = RecordingTransport()
        relay = store.relay(transport, plain_message)
        while relay.run_once():
            pass
    assert transport.ids() == [first, second]


def test_purge_asks_first_and_needs_ids_or_all(tmp_path: Path) -> None:
    """purge refuses without ids or --all, stops on 'no', deletes on --yes."""
    path = tmp_path / "o.db"
    dead_lettered(path)
    db = f"sqlite:///{path}"
    vague = run_cli("outbox", "purge", "--db", db)
    assert vague.returncode == 2
    assert "event ids, or --all" in vague.stderr
    declined = run_cli("outbox", "purge", "--db", db, "--all", stdin="n\n")
    assert declined.returncode != 0
    assert "1 dead letter(s)" in run_cli("outbox", "status", "--db", db).stdout
    done = run_cli("outbox", "purge", "--db", db, "--all", "--yes")
    assert "1 dead letter(s) deleted" in done.stdout
    assert "0 dead letter(s)" in run_cli("outbox", "status", "--db", db).stdout
