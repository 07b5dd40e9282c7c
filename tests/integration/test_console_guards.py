"""The console's guards without a browser: who may start it where, and which host it answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import tidings
from tests.integration.cli import run_cli
from tidings.application.handling import Handlers
from tidings.examples.shop.es_orders import ORDER_EVENTS, ORDER_UPCASTERS, ItemAdded
from tidings.testing.contract import Counted


def test_binding_beyond_loopback_without_a_token_is_refused_in_one_line(tmp_path: Path) -> None:
    """--host 0.0.0.0 needs --token (or TIDINGS_CONSOLE_TOKEN); the error says so."""
    everywhere = "0.0.0.0"  # noqa: S104 - the binding the console must refuse
    done = run_cli("console", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--host", everywhere)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "--token or TIDINGS_CONSOLE_TOKEN" in done.stderr


@pytest.mark.parametrize(("host", "status"), [("127.0.0.1", 200), ("rebound.example", 403)])
def test_without_a_token_only_requests_to_a_loopback_host_are_answered(
    tmp_path: Path, host: str, status: int
) -> None:
    """A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) is refused."""
    from tidings.console.app import create_app
    from tidings.console.context import Console
    from tidings.console.security import Guard

    with tidings.connect(f"sqlite:///{tmp_path / 'c.db'}", outbox=True) as store:
        app = create_app(Console(store, Guard(None), "ada"))
        assert asyncio.run(get(app, "/", host)) == status


async def get(app: Any, path: str, host: str) -> int:
    """The status of a GET through the ASGI app, as a server would call it."""
    return (await fetch(app, path, host))[0]


async def fetch(app: Any, path: str, host: str) -> tuple[int, str]:
    """The status and body of a GET through the ASGI app, as a server would call it."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(sent[0]["status"]), body.decode()


def test_another_services_database_that_is_not_there_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    """--inbox-db naming a SQLite file that does not exist is a typo, not an empty
    database: the console says so rather than create it, as tidings trace does."""
    missing = tmp_path / "mail.db"
    done = run_cli(
        "console", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--inbox-db", f"sqlite:///{missing}"
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"there is no file {missing}" in done.stderr
    assert not missing.exists()


def test_projections_that_are_not_projections_are_refused_in_one_line(tmp_path: Path) -> None:
    """--projections must name a Projection or a list of them, as for tidings projections."""
    events = "tidings.examples.shop.es_orders:ORDER_EVENTS"  # event classes, not projections
    done = run_cli("console", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--projections", events)
    assert done.returncode == 2
    assert f"--projections {events} must be a Projection or a list of them" in done.stderr


def test_aggregates_that_are_not_aggregate_classes_are_refused_in_one_line(
    tmp_path: Path,
) -> None:
    """--aggregates must name an event-sourced aggregate class or a list of them."""
    events = "tidings.examples.shop.es_orders:ORDER_EVENTS"  # event classes, not aggregates
    done = run_cli("console", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--aggregates", events)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"--aggregates {events} must be an event-sourced aggregate class" in done.stderr


def test_without_aggregates_the_streams_page_says_how_to_see_the_state(tmp_path: Path) -> None:
    """The page lists events as before, and says in one line which option folds them."""
    from tidings.console.app import create_app
    from tidings.console.context import Console
    from tidings.console.security import Guard

    with tidings.connect(f"sqlite:///{tmp_path / 'c.db'}", outbox=True) as store:
        app = create_app(Console(store, Guard(None), "ada"))
        status, body = asyncio.run(fetch(app, "/streams", "127.0.0.1"))
    assert status == 200
    assert "start the console with <code>--aggregates module:attr</code>" in body
    assert "<select" not in body


UPCASTING = tidings.EventRegistry(ORDER_EVENTS, upcasters=ORDER_UPCASTERS)


def test_an_event_registry_given_as_registry_is_the_one_events_are_read_with() -> None:
    """--registry naming an EventRegistry decodes the console's events (its upcasters
    read older ItemAdded events), with the classes --handlers takes added to it."""
    from tidings.cli.console import decoding

    handlers = Handlers()
    handlers.add(Counted, "tally.count", lambda event, uow: None)
    found = decoding(f"{__name__}:UPCASTING", handlers)
    assert found is UPCASTING
    assert found.upcaster(ItemAdded, 1) is not None
    assert found.resolve("Counted", 1) is Counted
