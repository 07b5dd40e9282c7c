"""Your SQL in one parameter style on every backend.

``uow.execute`` takes named parameters, ``:name`` with a mapping (SQLAlchemy's ``text()``
style), or ``?`` with a sequence. SQLite takes both as they are; for psycopg (PostgreSQL)
they become ``%(name)s`` and ``%s``, and every other ``%`` becomes ``%%``. String literals,
quoted identifiers, comments, dollar-quoted bodies and PostgreSQL's ``::`` casts are left
alone, so ``'10:30'``, ``"a?b"`` and ``x::int`` mean what they say.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tidings.errors import ConfigurationError

# One alternative per thing to step over or translate, tried left to right at each place.
_TOKENS = re.compile(
    r"""
      (?P<quoted>'(?:[^']|'')*'|"(?:[^"]|"")*")     # string literal, quoted identifier
    | (?P<comment>--[^\n]*|/\*.*?\*/)              # comments
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$)  # $$ ... $$, $body$ ... $body$
    | (?P<cast>::)                                 # PostgreSQL cast, not a parameter
    | :(?P<name>[A-Za-z_]\w*)                      # :name
    | (?P<qmark>\?)
    | (?P<percent>%)
    """,
    re.VERBOSE | re.DOTALL,
)


@lru_cache(maxsize=512)
def for_psycopg(sql: str) -> str:
    """``sql`` in psycopg's style (``%(name)s``, ``%s``, ``%%``); it refuses a statement
    that mixes ``:name`` and ``?``, which no single set of parameters can fill."""
    styles: set[str] = set()

    def swap(match: re.Match[str]) -> str:
        if match["name"] is not None:
            styles.add(":name")
            return f"%({match['name']})s"
        if match["qmark"] is not None:
            styles.add("?")
            return "%s"
        # psycopg reads every % as a placeholder once parameters are given, even an
        # empty sequence, and inside quotes and comments too.
        return match[0].replace("%", "%%")

    translated = _TOKENS.sub(swap, sql)
    if len(styles) > 1:
        raise ConfigurationError(
            f"this statement mixes :name and ? parameters: {sql[:200]!r}. Use one style "
            "per statement (named parameters with a mapping, or ? with a sequence)"
        )
    return translated
