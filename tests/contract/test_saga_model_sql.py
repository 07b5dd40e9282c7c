"""The saga property test of tests/unit/test_saga_model.py on SQLite and PostgreSQL:
random sagas (1-8 steps, some without compensation) with random failures of actions and
compensations end as the model says, with their effects in the order it says, when
every transition goes through a real database."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tidings
from tests.conftest import MakeStore
from tests.unit.test_saga_model import INTERVENTION, LIFO, Plan, plans, run_against_model


@pytest.fixture
def sql_store(make_sql_store: MakeStore) -> tidings.Store:
    """One store per backend, shared by the examples (each saga has an id of its own)."""
    return make_sql_store()


@settings(
    max_examples=20,  # every transition is a commit: a bounded number keeps this quick
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(plans, min_size=1, max_size=8))
@example(LIFO)
@example(INTERVENTION)
def test_random_sagas_on_sql_end_and_act_as_the_model_says(
    sql_store: tidings.Store, steps: list[Plan]
) -> None:
    """End state and order of effects match the model, whatever fails."""
    run_against_model(sql_store, steps)
