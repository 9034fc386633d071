"""Token buckets: bursts, refill, bounded memory."""

from __future__ import annotations

import pytest

from api.ratelimit import TokenBuckets


def test_burst_then_refill() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert buckets.take("b", now=0.5) == 0.0  # keys are independent


def test_zero_rate_means_unlimited() -> None:
    buckets = TokenBuckets(rate=0.0, burst=1)
    assert all(buckets.take("a", now=0.0) == 0.0 for _ in range(1000))


def test_memory_is_bounded_by_max_keys() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=10)
    for i in range(1000):
        buckets.take(f"ip{i}", now=0.0)
    assert len(buckets._buckets) == 10
