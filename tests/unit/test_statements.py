"""The portable parameter style, translated for psycopg."""

from __future__ import annotations

import pytest

from tidings.application.statements import for_psycopg
from tidings.errors import ConfigurationError


@pytest.mark.parametrize(
    ("portable", "psycopg"),
    [
        ("INSERT INTO t VALUES (:id, :n)", "INSERT INTO t VALUES (%(id)s, %(n)s)"),
        ("SELECT ?, ?", "SELECT %s, %s"),
        ("SELECT x::int, '10:30' WHERE a = :a", "SELECT x::int, '10:30' WHERE a = %(a)s"),
        ("SELECT 7 % 3, '5%' LIKE 'a%'", "SELECT 7 %% 3, '5%%' LIKE 'a%%'"),
        (
            "SELECT \"a?b\", ':no' /* ? :c */ -- :d\n, ?",
            "SELECT \"a?b\", ':no' /* ? :c */ -- :d\n, %s",
        ),
        ("SELECT $$ :x ? $$, $f$ ? $f$, :y", "SELECT $$ :x ? $$, $f$ ? $f$, %(y)s"),
        ("SELECT 'it''s :not' , :yes", "SELECT 'it''s :not' , %(yes)s"),
    ],
)
def test_parameters_become_psycopgs_and_everything_quoted_stays(
    portable: str, psycopg: str
) -> None:
    """Named and ? parameters are translated; quotes, comments, casts and dollar bodies are
    left as they are, and every % is doubled (psycopg reads it as a placeholder)."""
    assert for_psycopg(portable) == psycopg


def test_a_statement_mixing_both_styles_is_refused_with_what_to_do() -> None:
    """No one set of parameters fills both :name and ?."""
    with pytest.raises(ConfigurationError, match="mixes :name and \\? parameters"):
        for_psycopg("SELECT :a, ?")
