"""The one-line reading of a verdict that operators see (the smoke test's checklist)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.chain.verdict import (
    Confirmed,
    Pending,
    PendingReason,
    RejectCode,
    Rejected,
    Verdict,
    describe_verdict,
)

AT = datetime(2026, 11, 26, 21, 17, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("verdict", "text"),
    [
        (
            Confirmed(10_000, "8px2Dk", 435_888_000, AT),
            "confirmed: 10000 base units received at slot 435888000 (2026-11-26 21:17:25Z)"
            " from 8px2Dk",
        ),
        (
            Confirmed(12_000, None, 7, None, overpaid=True, late=True),
            "confirmed: 12000 base units received at slot 7 from an unknown payer, overpaid, late",
        ),
        (
            Pending(PendingReason.NOT_FINAL, "seen at confirmed"),
            "pending tx_not_final: seen at confirmed",
        ),
        (Pending(PendingReason.NOT_FOUND), "pending tx_not_found"),
        (
            Rejected(RejectCode.WRONG_MINT, "paid with another mint"),
            "rejected wrong_mint: paid with another mint",
        ),
    ],
)
def test_describe_verdict(verdict: Verdict, text: str) -> None:
    assert describe_verdict(verdict) == text
