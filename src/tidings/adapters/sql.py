"""What the SQL adapters share: identifier checks, schema files, time format, error text."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from tidings.errors import ConfigurationError

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")
MAX_IDENTIFIER = 48  # leaves room for suffixes PostgreSQL adds to index names (limit 63)


@dataclass(frozen=True)
class SchemaPart:
    """One capability's tables, created together and versioned in ``schema_version``.

    Each SQL adapter package has a file ``<file>`` with the part's DDL, table names in
    braces (``{events}``) filled in from the configured prefix (and PostgreSQL schema).
    Index names are written ``{prefix}name``: PostgreSQL puts an index in its table's
    schema and refuses a qualified index name.

    ``upgrades`` names the files that carry a database made by an older version forward,
    one step each: the first from version 1 to 2, the next from 2 to 3, and so on.
    ``retired`` names tables an older version had and an upgrade drops: the upgrade files
    may name them in braces, the code no longer does.
    """

    name: str
    version: int
    file: str
    tables: tuple[str, ...]
    upgrades: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()


SCHEMA_PARTS: tuple[SchemaPart, ...] = (
    SchemaPart("core", 1, "schema.sql", ("schema_version", "events")),
    # Version 2 dropped the index events_by_time: it cost every event written a fifth of
    # SQLite's time, and "as of" reads the stream's prefix in version order without it.
    SchemaPart(
        "event_sourcing", 2, "event_sourcing.sql", ("snapshots",), ("event_sourcing_v2.sql",)
    ),
    # Before the outbox: its version 3 moves the relays' lanes into these tables.
    SchemaPart("leases", 1, "leases.sql", ("leases", "lease_owners")),
    # Version 2: PostgreSQL's backlog index is a full (published, position) index.
    # Version 3: the lanes are the lease set 'outbox'; relay_lanes and relay_nodes go.
    SchemaPart(
        "outbox",
        3,
        "outbox.sql",
        ("outbox", "outbox_dead_letters"),
        ("outbox_v2.sql", "outbox_v3.sql"),
        retired=("relay_lanes", "relay_nodes"),
    ),
    # Version 2: inbox_in_flight, what each consumer fetched and has not finished.
    # Version 3: that record as inbox_fetched, one row per fetched batch.
    SchemaPart(
        "inbox",
        3,
        "inbox.sql",
        ("inbox", "inbox_dead_letters", "inbox_fetched"),
        ("inbox_v2.sql", "inbox_v3.sql"),
        retired=("inbox_in_flight",),
    ),
    SchemaPart("personal_data", 1, "personal_data.sql", ("subject_keys",)),
    # Version 2: started_at and started_position, a rebuild's rate and ETA in status.
    SchemaPart(
        "projections",
        2,
        "projections.sql",
        ("projections", "projection_skips"),
        ("projections_v2.sql",),
    ),
    SchemaPart("messages", 1, "messages.sql", ("message_keys", "scheduled_messages")),
    # Version 2: deadlines, the reply a remote step waits for, the conversation id.
    # Version 3: partial indexes on the transitions that metrics count.
    # Version 4: trace_context, the trace a saga was started in, for its later steps.
    SchemaPart(
        "sagas",
        4,
        "sagas.sql",
        ("sagas", "saga_transitions"),
        ("sagas_v2.sql", "sagas_v3.sql", "sagas_v4.sql"),
    ),
    # Heartbeats of the workers the tidings command runs (tidings status).
    SchemaPart("workers", 1, "workers.sql", ("workers",)),
    # Projections fed by a broker stream: their checkpoint per source service.
    SchemaPart(
        "projection_sources",
        1,
        "projection_sources.sql",
        ("projection_sources", "projection_positions"),
    ),
)
"""Every part, in the order they are created; later capabilities append theirs."""


def table_names(prefix: str, qualifier: str = "") -> dict[str, str]:
    """Base table name -> the name to put into SQL, for every table of every part; and
    ``<table>_bare`` -> the name without the schema, for naming its indexes."""
    dot = f"{qualifier}." if qualifier else ""
    names = {}
    for part in SCHEMA_PARTS:
        for table in part.tables:
            names[table] = f"{dot}{prefix}{table}"
            names[f"{table}_bare"] = f"{prefix}{table}"
    return names


def ddl_names(prefix: str, qualifier: str = "") -> dict[str, str]:
    """What the schema files' braces stand for: every table (retired ones too, for the
    upgrades that drop them), ``prefix`` and ``schema``."""
    dot = f"{qualifier}." if qualifier else ""
    retired = {t: f"{dot}{prefix}{t}" for part in SCHEMA_PARTS for t in part.retired}
    retired |= {f"{t}_bare": f"{prefix}{t}" for part in SCHEMA_PARTS for t in part.retired}
    return {
        "prefix": prefix,
        "schema": qualifier,
        "commit_channel": commit_channel(prefix, qualifier),
        **retired,
        **table_names(prefix, qualifier),
    }


def commit_channel(prefix: str, schema: str) -> str:
    """The PostgreSQL channel a commit of events or outbox rows NOTIFYs: relays and
    projection runners LISTEN on it."""
    return identifier(f"{prefix}outbox_{schema}"[:48], "channel")


def identifier(name: str, what: str) -> str:
    """Return ``name`` if it is safe to put into SQL unquoted, else raise with the rule."""
    if not (_IDENTIFIER.match(name) and len(name) <= MAX_IDENTIFIER):
        raise ConfigurationError(
            f"{what} {name!r} is not a safe SQL identifier: use lower-case letters, digits and "
            f"underscores, starting with a letter or underscore, at most {MAX_IDENTIFIER} "
            "characters"
        )
    return name


def table_prefix(prefix: str) -> str:
    """Validate a table prefix (empty is allowed)."""
    return identifier(prefix, "table prefix") if prefix else ""


def schema_text(package: str, names: dict[str, str], parts: tuple[SchemaPart, ...] = ()) -> str:
    """The DDL of ``parts`` (all by default) with validated table names filled in."""
    chosen = parts or SCHEMA_PARTS
    return "\n".join(schema_file(package, part.file, names) for part in chosen)


def schema_file(package: str, file: str, names: dict[str, str]) -> str:
    """One schema file of ``package`` with validated table names filled in. The file is
    found through the package's parent, so the backend's package is not imported: the
    DDL of PostgreSQL can be printed without its driver installed."""
    parent, _, folder = package.rpartition(".")
    text = resources.files(parent).joinpath(folder, file).read_text(encoding="utf-8")
    return text.format(**names)


def postgres_schema(schema: str = "public", prefix: str = "tidings_") -> str:
    """The PostgreSQL DDL for a schema and table prefix (no driver needed)."""
    schema = identifier(schema, "PostgreSQL schema")
    return schema_text("tidings.adapters.postgres", ddl_names(table_prefix(prefix), schema))


def ensure_parts(
    execute: Callable[[str, tuple[Any, ...]], Any],
    version_of: Callable[[str], int | None],
    *,
    package: str,
    names: dict[str, str],
    mark: str,
    where: str,
) -> None:
    """Create every missing part inside the caller's transaction and record its version.

    ``version_of(part)`` is None when the part was never created. A part stored at an
    older version is upgraded step by step, in the same transaction; one stored at a newer
    version than this code knows stops everything with a clear error.
    """
    for part in SCHEMA_PARTS:
        found = version_of(part.name)
        if found is None:
            for statement in split_statements(schema_text(package, names, (part,))):
                execute(statement, ())
            execute(
                f"INSERT INTO {names['schema_version']} (component, version) "
                f"VALUES ({mark}, {mark})",
                (part.name, part.version),
            )
        elif found > part.version:
            raise schema_too_new(part, found, where)
        elif found < part.version:
            for upgrade in part.upgrades[found - 1 :]:
                for statement in split_statements(schema_file(package, upgrade, names)):
                    execute(statement, ())
            execute(
                f"UPDATE {names['schema_version']} SET version = {mark} WHERE component = {mark}",
                (part.version, part.name),
            )


def split_statements(script: str) -> list[str]:
    """Split a schema script on ';' at line ends (our schema files have no ';' inside)."""
    statements = []
    for chunk in script.split(";\n"):
        lines = [ln for ln in chunk.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        if lines:
            statements.append("\n".join(lines).rstrip(";"))
    return statements


def iso_utc(moment: datetime) -> str:
    """A fixed-width ISO 8601 UTC string, so text order is time order in SQLite.

    Exactly what ``isoformat(timespec="microseconds")`` gives for the UTC instant (the
    rows stored before compare with the rows stored now). It runs once per event written:
    the text up to the second is kept for the seconds seen last (the events of a unit of
    work share a few), so most events format only their microseconds.
    """
    if moment.tzinfo is not UTC:  # the common case, UTC, skips the conversion
        if moment.tzinfo is None:
            raise ValueError(
                f"{moment!r} has no time zone; tidings stores UTC-aware datetimes only"
            )
        moment = moment.astimezone(UTC)
    second = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    head = _SECONDS.get(second)
    if head is None:
        if len(_SECONDS) >= 1024:  # a bound, not a policy: start again
            _SECONDS.clear()
        head = _SECONDS[second] = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.".format(*second)
    us = moment.microsecond  # its six digits as two halves from a table: cheaper than %06d
    return f"{head}{_DIGITS3[us // 1000]}{_DIGITS3[us % 1000]}+00:00"


_SECONDS: dict[tuple[int, ...], str] = {}
"""(year, month, day, hour, minute, second) -> its ISO text up to the decimal point."""

_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))
"""n -> n in three digits, "000" to "999": the halves of the microseconds."""


def schema_too_new(part: SchemaPart, found: int, where: str) -> ConfigurationError:
    """The error for a database whose tables are newer than this code."""
    return ConfigurationError(
        f"{where} has the tidings {part.name} tables at schema version {found}, but this "
        f"tidings knows only up to version {part.version}: upgrade tidings before using it"
    )
