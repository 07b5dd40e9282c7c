"""Histogram buckets counted in plain Python, exposed as Prometheus expects them."""

from __future__ import annotations

from tidings.observability.buckets import Buckets


def test_each_value_counts_in_every_bucket_at_or_above_it() -> None:
    """A value equal to a bound is in that bound's bucket (``le``); the rest go to +Inf."""
    buckets = Buckets((1.0, 2.0))
    buckets.add(1.0)
    buckets.add_many([0.5, 2.0, 3.0])
    assert buckets.cumulative() == [("1.0", 2.0), ("2.0", 3.0), ("+Inf", 4.0)]
    assert buckets.total == 6.5
