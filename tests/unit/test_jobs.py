"""Job ticks: every replica names a tick alike; lock keys are stable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.jobs import lock_key, tick_of

T = datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "interval", "tick"),
    [
        (T, 60, datetime(2025, 3, 4, 5, 6, tzinfo=UTC)),
        (T, 300, datetime(2025, 3, 4, 5, 5, tzinfo=UTC)),
        (T, 86400, datetime(2025, 3, 4, tzinfo=UTC)),
        (T, 2, datetime(2025, 3, 4, 5, 6, 6, tzinfo=UTC)),
        (T, 0.5, datetime(2025, 3, 4, 5, 6, 7, 500_000, tzinfo=UTC)),
        (datetime(2025, 3, 4, 5, 6, tzinfo=UTC), 60, datetime(2025, 3, 4, 5, 6, tzinfo=UTC)),
        (
            datetime(2025, 3, 4, 5, 5, 59, 999_999, tzinfo=UTC),
            60,
            datetime(2025, 3, 4, 5, 5, tzinfo=UTC),
        ),
    ],
)
def test_tick_is_the_latest_multiple_of_the_interval(
    now: datetime, interval: float, tick: datetime
) -> None:
    assert tick_of(now, interval) == tick


def test_ticks_agree_across_replicas_firing_apart_within_the_interval() -> None:
    base = datetime(2025, 3, 4, 5, 10, tzinfo=UTC)
    fired = [base + timedelta(milliseconds=ms) for ms in (0, 3, 250, 4_999)]
    assert {tick_of(t, 5) for t in fired} == {base}


def test_tick_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        tick_of(T, 0)


def test_lock_keys_are_stable_distinct_int4() -> None:
    names = ["reconcile", "recovery", "expire_approvals", "audit_seal", "daily_summary"]
    keys = [lock_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    assert all(0 <= k < 2**31 for k in keys)
    assert lock_key("reconcile") == lock_key("reconcile")
