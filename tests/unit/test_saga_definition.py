"""Saga definitions refuse what cannot run, saying what was wrong."""

from __future__ import annotations

import pytest

from tidings.domain.saga import RetryPolicy, SagaDefinition, Step


def test_a_definition_without_steps_or_with_a_step_name_twice_is_refused() -> None:
    """Step names identify transitions on the history, so they must be unique."""
    with pytest.raises(ValueError, match="has no steps: give at least one"):
        SagaDefinition("empty", [])
    with pytest.raises(ValueError, match=r"names steps \['a'\] twice"):
        SagaDefinition("twice", [Step("a", lambda ctx: None), Step("a", lambda ctx: None)])


def test_a_retry_policy_with_negative_retries_or_no_delays_is_refused() -> None:
    """And the last delay repeats when there are more retries than delays."""
    with pytest.raises(ValueError, match="give 0 or more retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="give one or more waits"):
        RetryPolicy(retries=1, delays=())
    assert [RetryPolicy(7, (1.0, 2.0)).delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 2.0]
