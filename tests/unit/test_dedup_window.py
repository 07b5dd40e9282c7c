"""The dedup-window warning: duplicates must not outlive the inbox's memory of the original."""

from __future__ import annotations

from tidings.application.backoff import Backoff
from tidings.workers.consumer import dedup_window_warning, retry_horizon


def test_a_window_longer_than_every_horizon_gives_no_warning() -> None:
    """Seven days against a relay that retries for minutes: nothing to say."""
    assert dedup_window_warning(7 * 86_400, ("a relay's retries", 900.0)) is None


def test_a_window_shorter_than_a_horizon_names_it_and_says_what_to_do() -> None:
    """One hour against a day of redeliveries: the warning names both and the risk."""
    text = dedup_window_warning(3_600, ("the broker's redelivery", 86_400.0), ("x", 60.0))
    assert text is not None
    assert "1.0 h" in text
    assert "the broker's redelivery up to 24.0 h" in text
    assert "x up to" not in text
    assert "applied twice" in text


def test_the_retry_horizon_adds_up_the_capped_waits_with_their_jitter() -> None:
    """Backoff 1, 2, 4 s (cap 3) with 10% jitter over four attempts: (1 + 2 + 3) * 1.1."""
    horizon = retry_horizon(Backoff(base=1.0, factor=2.0, cap=3.0, jitter=0.1), 4)
    assert abs(horizon - 6.6) < 1e-9
