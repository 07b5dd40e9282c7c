"""Fixtures shared by the suite: real servers, unique names, and the CI rule.

Under ``CI=true`` a server that cannot be reached fails the test; elsewhere the test is
skipped with a message that says how to start the server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tidings
from tidings.serialization.registry import EventRegistry

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("TIDINGS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
RABBIT_URL = os.environ.get("TIDINGS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
RABBIT_START = "rabbitmq-server -detached"
NATS_URL = os.environ.get("TIDINGS_TEST_NATS", "nats://127.0.0.1:4222")
NATS_START = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)


def reachable(host: str, port: int) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int, start: str) -> None:
    """Fail (in CI) or skip (elsewhere) when a server the test needs is down."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}; start it with: {start}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test session, dropped at the end; yields its URL."""
    require_server("PostgreSQL", "127.0.0.1", 5432, PG_START)
    import psycopg

    name = f"tidings_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def rabbitmq_url() -> str:
    """The local RabbitMQ (tests declare their own exchanges and queues, named uniquely)."""
    require_server("RabbitMQ", "127.0.0.1", 5672, RABBIT_START)
    return RABBIT_URL


@pytest.fixture
def nats_url() -> str:
    """The local NATS server with JetStream (tests create their own streams)."""
    require_server("NATS", "127.0.0.1", 4222, NATS_START)
    return NATS_URL


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The URL of the session's PostgreSQL test database."""
    return pg_database


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A unique PostgreSQL schema name, dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

MakeStore = Callable[..., tidings.Store]


def store_maker(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MakeStore]:
    """Yield a factory of fresh stores on ``backend``; close and remove them afterwards."""
    opened: list[tidings.Store] = []
    schemas: list[str] = []
    pg: list[str] = []

    def make(registry: EventRegistry | None = None, **options: object) -> tidings.Store:
        if backend == "memory":
            url = "memory://"
        elif backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'store-{len(opened)}.db'}"
        else:
            url = request.getfixturevalue("pg_url")
            pg[:] = [url]
            schema = f"t_{uuid.uuid4().hex[:12]}"
            schemas.append(schema)
            options.setdefault("schema", schema)
        store = tidings.connect(url, registry=registry, **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    if schemas:
        import psycopg

        with psycopg.connect(pg[0], autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """A factory of fresh stores, once per backend: memory, SQLite and PostgreSQL."""
    yield from store_maker(request.param, request, tmp_path)


@pytest.fixture(params=SQL_BACKENDS)
def make_sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """A factory of fresh stores on the SQL backends, where your own tables live too."""
    yield from store_maker(request.param, request, tmp_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep tests marked ``slow`` out of the default run; ``pytest -m slow`` runs them."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a long run: select it with pytest -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
