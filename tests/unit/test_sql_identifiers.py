"""SQL helpers and store URLs: identifiers, UTC text, schema scripts, and connect()'s checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tidings
from tidings import Aggregate, ConfigurationError, DomainEvent, EventRegistry
from tidings.adapters.sql import MAX_IDENTIFIER, identifier, iso_utc, split_statements, table_prefix
from tidings.backends import sqlite_path

SAFE = re.compile(r"[a-z_][a-z0-9_]*")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    ["events", "tidings_", "_private", "a1_b2", "x", "a" * MAX_IDENTIFIER],
)
def test_lower_case_snake_names_are_accepted_unchanged(name: str) -> None:
    """A lower-case snake name of at most 48 characters is returned as given."""
    assert identifier(name, "table") == name


@pytest.mark.parametrize(
    "name",
    [
        "Events",
        "EVENTS",
        "1events",
        "my events",
        'my"events',
        "my'events",
        "events;drop",
        "my-events",
        "",
        "a" * (MAX_IDENTIFIER + 1),
        "events\n",
        "\u00e9v\u00e9nements",
    ],
    ids=[
        "capital",
        "upper-case",
        "leading-digit",
        "space",
        "double-quote",
        "single-quote",
        "semicolon",
        "dash",
        "empty",
        "49-chars",
        "trailing-newline",
        "non-ascii",
    ],
)
def test_unsafe_names_are_refused_with_the_rule(name: str) -> None:
    """Anything but a short lower-case snake name raises ConfigurationError stating the rule."""
    with pytest.raises(ConfigurationError, match="lower-case letters, digits and underscores"):
        identifier(name, "table")


def test_the_error_names_what_the_identifier_was_for() -> None:
    """The message starts with the role given, then the refused name."""
    with pytest.raises(ConfigurationError, match=r"^schema 'Public' is not a safe SQL identifier"):
        identifier("Public", "schema")


def test_an_empty_table_prefix_is_allowed() -> None:
    """Tables may have no prefix at all."""
    assert table_prefix("") == ""


def test_a_table_prefix_follows_the_identifier_rule() -> None:
    """A snake prefix is kept; an unsafe one is refused as a table prefix."""
    assert table_prefix("shop_") == "shop_"
    with pytest.raises(ConfigurationError, match=r"^table prefix 'Shop-' is not a safe"):
        table_prefix("Shop-")


@settings(max_examples=200)
@given(name=st.text() | st.from_regex(SAFE, fullmatch=True))
def test_any_accepted_identifier_is_safe_and_short(name: str) -> None:
    """For any text, identifier() either refuses it or returns a safe name of <= 48 chars."""
    outcome: str | ConfigurationError
    try:
        outcome = identifier(name, "table")
    except ConfigurationError as error:
        outcome = error
    if isinstance(outcome, ConfigurationError):
        assert "is not a safe SQL identifier" in str(outcome)
    else:
        assert outcome == name
        assert SAFE.fullmatch(outcome)
        assert len(outcome) <= MAX_IDENTIFIER


def test_iso_utc_refuses_a_naive_datetime() -> None:
    """A datetime without a time zone raises ValueError."""
    with pytest.raises(ValueError, match="no time zone"):
        iso_utc(datetime(2025, 1, 15, 10, 0))


def test_iso_utc_converts_to_utc_with_microseconds() -> None:
    """An aware non-UTC time is written as its UTC instant, with six decimals and +00:00."""
    paris_winter = timezone(timedelta(hours=1))
    assert iso_utc(datetime(2025, 1, 15, 11, 30, tzinfo=paris_winter)) == (
        "2025-01-15T10:30:00.000000+00:00"
    )
    assert iso_utc(datetime(2025, 1, 15, 10, 0, 0, 7, tzinfo=UTC)) == (
        "2025-01-15T10:00:00.000007+00:00"
    )


aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(
        st.just(UTC),
        st.integers(min_value=-23 * 60 + 1, max_value=23 * 60 - 1).map(
            lambda minutes: timezone(timedelta(minutes=minutes))
        ),
        st.timezones(),
    ),
)


@settings(max_examples=200)
@given(moment=aware_datetimes)
def test_iso_utc_is_fixed_width_utc(moment: datetime) -> None:
    """Every aware datetime gives 32 characters ending in +00:00, for the same instant."""
    text = iso_utc(moment)
    assert len(text) == len("2025-01-15T10:30:00.000000+00:00")
    assert text.endswith("+00:00")
    assert datetime.fromisoformat(text) - EPOCH == moment - EPOCH


@settings(max_examples=200)
@given(moment=aware_datetimes)
def test_iso_utc_writes_what_isoformat_wrote_for_the_utc_instant(moment: datetime) -> None:
    """The text is isoformat's with microseconds, so rows stored by earlier versions (which
    used isoformat) and rows stored now keep comparing in time order."""
    expected = moment.astimezone(UTC).isoformat(timespec="microseconds")
    assert iso_utc(moment) == expected


def test_iso_utc_stays_exact_over_thousands_of_different_seconds() -> None:
    """Three thousand seconds, twice each (the text up to the second is kept for a while,
    and let go past a bound): every text is isoformat's."""
    start = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    for n in range(3_000):
        for micro in (0, 999_999):
            moment = start + timedelta(seconds=n * 61, microseconds=micro)
            assert iso_utc(moment) == moment.isoformat(timespec="microseconds")


@settings(max_examples=200)
@given(first=aware_datetimes, second=aware_datetimes)
def test_iso_utc_text_order_is_time_order(first: datetime, second: datetime) -> None:
    """Comparing the strings gives the same answer as comparing the instants."""
    first_instant, second_instant = first - EPOCH, second - EPOCH
    assert (iso_utc(first) < iso_utc(second)) == (first_instant < second_instant)
    assert (iso_utc(first) == iso_utc(second)) == (first_instant == second_instant)


def test_split_statements_drops_comments_and_blank_chunks() -> None:
    """Comment lines and empty chunks vanish; each statement keeps its lines, without ';'."""
    script = (
        "-- the event log\n"
        "CREATE TABLE events (\n"
        "    id INTEGER PRIMARY KEY\n"
        ");\n"
        "\n"
        "   \n"
        "-- only a comment here;\n"
        ";\n"
        "CREATE INDEX events_id ON events (id);\n"
    )
    assert split_statements(script) == [
        "CREATE TABLE events (\n    id INTEGER PRIMARY KEY\n)",
        "CREATE INDEX events_id ON events (id)",
    ]


def test_split_statements_of_an_empty_script_is_empty() -> None:
    """A script of only blanks and comments has no statements."""
    assert split_statements("\n  \n-- nothing\n") == []


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel.db", Path("rel.db")),
        ("sqlite:///data/shop.db", Path("data/shop.db")),
        ("sqlite:////abs/x.db", Path("/abs/x.db")),
        ("sqlite:///my%20shop.db", Path("my shop.db")),
        ("sqlite:////tmp/caf%C3%A9.db", Path("/tmp/caf\u00e9.db")),  # noqa: S108 - not opened
        ("sqlite:///shop.db?mode=ro", Path("shop.db")),
        ("SQLite:///shop.db", Path("shop.db")),
    ],
    ids=["relative", "relative-dir", "absolute", "space", "utf8", "query", "scheme-case"],
)
def test_sqlite_path_reads_the_file_path_of_a_url(url: str, path: Path) -> None:
    """Three slashes start a relative path, four an absolute one; %xx escapes are decoded."""
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///?mode=ro"])
def test_a_sqlite_url_without_a_path_is_refused(url: str) -> None:
    """A URL that names no file raises ConfigurationError with an example."""
    with pytest.raises(ConfigurationError, match="names no file"):
        sqlite_path(url)


@pytest.mark.parametrize(
    "url", ["postgresql://u@h/db", "sqlite://shop.db", "sqlite:shop.db", "shop.db"]
)
def test_a_url_that_is_not_sqlite_is_refused_by_sqlite_path(url: str) -> None:
    """Anything not starting with sqlite:/// raises ConfigurationError showing both forms."""
    with pytest.raises(ConfigurationError, match="is not an SQLite URL") as caught:
        sqlite_path(url)
    assert "sqlite:////absolute/path.db" in str(caught.value)


@pytest.mark.parametrize("url", ["mysql://x", "redis://localhost", "shop.db", ""])
def test_connect_with_an_unknown_scheme_names_the_supported_forms(url: str) -> None:
    """ConfigurationError lists the sqlite, postgresql and memory URL forms."""
    with pytest.raises(ConfigurationError, match="cannot open") as caught:
        tidings.connect(url)
    message = str(caught.value)
    assert "sqlite:///" in message
    assert "postgresql://" in message
    assert "memory://" in message


def test_connect_refuses_sqlite_in_memory_and_points_to_memory_scheme() -> None:
    """sqlite:///:memory: would give each connection its own database, so it is refused."""
    with pytest.raises(ConfigurationError, match="memory://"):
        tidings.connect("sqlite:///:memory:")


@dataclass(frozen=True, kw_only=True)
class Counted(DomainEvent):
    """A counter went up."""

    step: int


class Counter(Aggregate):
    """An aggregate that counts."""

    def increment(self, step: int) -> None:
        """Record one step."""
        self.record(Counted(step=step))


def test_connect_to_memory_gives_a_store_with_a_working_unit_of_work() -> None:
    """memory:// needs no server: a unit of work commits, reads back, and publishes."""
    delivered: list[DomainEvent] = []
    with tidings.connect("memory://", registry=EventRegistry([Counted])) as store:
        store.bus.subscribe(Counted, delivered.append)
        counter = Counter("counter-1")
        counter.increment(2)
        counter.increment(3)
        recorded = list(counter.pending_events)
        with store.unit_of_work() as uow:
            uow.track(counter)
        assert list(store.read_stream("counter-1")) == recorded
        assert store.read_all() == recorded
        assert delivered == recorded
        assert counter.pending_events == ()
        assert store.events.stream_version("counter-1") == 2
