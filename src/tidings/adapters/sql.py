"""What the SQL adapters share: identifier checks, schema files, time format, error text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources

from tidings.errors import ConfigurationError

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")
MAX_IDENTIFIER = 48  # leaves room for suffixes PostgreSQL adds to index names (limit 63)

CORE_SCHEMA_VERSION = 1
"""Version of the core tables (schema_version, events) this code creates and reads."""


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


def schema_text(package: str, **names: str) -> str:
    """The package's ``schema.sql`` with validated table names filled in."""
    text = resources.files(package).joinpath("schema.sql").read_text(encoding="utf-8")
    return text.format(**names)


def split_statements(script: str) -> list[str]:
    """Split a schema script on ';' at line ends (our schema files have no ';' inside)."""
    statements = []
    for chunk in script.split(";\n"):
        lines = [ln for ln in chunk.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        if lines:
            statements.append("\n".join(lines).rstrip(";"))
    return statements


def iso_utc(moment: datetime) -> str:
    """A fixed-width ISO 8601 UTC string, so text order is time order in SQLite."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; tidings stores UTC-aware datetimes only")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def schema_too_new(found: int, where: str) -> ConfigurationError:
    """The error for a database whose tables are newer than this code."""
    return ConfigurationError(
        f"{where} has tidings tables at schema version {found}, but this tidings knows only up "
        f"to version {CORE_SCHEMA_VERSION}: upgrade tidings before using this database"
    )
