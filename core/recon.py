"""Reconciliation: the runbook's comparisons and anomaly checks, as set-based SQL.

    1. Compare totals: verified purchase intents vs confirmed credit transactions; sum of
       expected credits vs applied credits.
    2. Check anomalies: duplicate tx signatures, intents stuck PENDING beyond the SLA,
       failed verifications with an eventually successful tx, unexpected negative balances.

Every check is one aggregate query (nothing loads whole tables into Python); `judge` is the
pure part that turns the numbers into findings and the drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from core import ledger_db


@dataclass(frozen=True, slots=True)
class ReconTotals:
    confirmed_intents: int
    purchase_transactions: int
    expected_credits: int  # credits of CONFIRMED intents
    applied_credits: int  # credits posted by purchase transactions
    duplicate_signatures: int  # signatures on more than one purchase credit / intent
    stale_pending: int  # PENDING beyond the SLA
    failed_then_succeeded: int  # intents with a rejected attempt and a later confirmation
    negative_balances: int
    ledger_total: int  # sum of every entry: 0
    unbalanced_transactions: int
    balance_mismatches: int


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    count: int
    detail: str


@dataclass(frozen=True, slots=True)
class ReconSummary:
    window_start: datetime | None
    window_end: datetime
    totals: ReconTotals
    findings: list[Finding] = field(default_factory=list)

    @property
    def drift_credits(self) -> int:
        return self.totals.expected_credits - self.totals.applied_credits

    @property
    def zero_drift(self) -> bool:
        return not self.findings


def judge(totals: ReconTotals) -> list[Finding]:
    """Pure: the findings the totals imply. No findings means zero drift."""
    t = totals
    findings = []
    if t.confirmed_intents != t.purchase_transactions:
        findings.append(
            Finding(
                "verified intents vs credit transactions",
                abs(t.confirmed_intents - t.purchase_transactions),
                f"{t.confirmed_intents} confirmed intents, "
                f"{t.purchase_transactions} purchase credits",
            )
        )
    if t.expected_credits != t.applied_credits:
        findings.append(
            Finding(
                "expected vs applied credits",
                abs(t.expected_credits - t.applied_credits),
                f"expected {t.expected_credits}, applied {t.applied_credits}",
            )
        )
    for name, count in (
        ("duplicate tx signatures", t.duplicate_signatures),
        ("intents stuck PENDING beyond SLA", t.stale_pending),
        ("failed verifications with eventually successful tx", t.failed_then_succeeded),
        ("unexpected negative user balances", t.negative_balances),
        ("unbalanced ledger transactions", t.unbalanced_transactions),
        ("cached balances differing from entries", t.balance_mismatches),
    ):
        if count:
            findings.append(Finding(name, count, f"{count} found"))
    if t.ledger_total != 0:
        findings.append(Finding("ledger sums to zero", 1, f"entries sum to {t.ledger_total}"))
    return findings


async def quick_reconcile(
    pool: asyncpg.Pool, *, now: datetime, pending_sla: timedelta, since: datetime | None = None
) -> ReconSummary:
    """Run every check over intents created since `since` (or all) and judge them."""
    start = since or datetime.min.replace(tzinfo=now.tzinfo)
    row = await pool.fetchrow(
        """
        WITH intents AS (
            SELECT * FROM purchase_intents WHERE created_at >= $1
        ), purchases AS (
            SELECT t.id, t.intent_id, t.purchase_signature,
                   (SELECT e.amount FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                     WHERE e.transaction_id = t.id AND a.kind = 'user') AS credits
            FROM ledger_transactions t JOIN intents i ON i.id = t.intent_id
            WHERE t.kind = 'purchase'
        )
        SELECT
          (SELECT count(*) FROM intents WHERE status = 'CONFIRMED') AS confirmed_intents,
          (SELECT count(*) FROM purchases) AS purchase_transactions,
          (SELECT coalesce(sum(credits), 0) FROM intents WHERE status = 'CONFIRMED') AS expected,
          (SELECT coalesce(sum(credits), 0) FROM purchases) AS applied,
          (SELECT count(*) FROM (
              SELECT signature FROM verification_attempts v JOIN intents i ON i.id = v.intent_id
              WHERE v.outcome = 'confirmed'
              GROUP BY signature HAVING count(DISTINCT v.intent_id) > 1) d) AS duplicates,
          (SELECT count(*) FROM intents
            WHERE status = 'PENDING' AND created_at < $2) AS stale,
          (SELECT count(DISTINCT i.id) FROM intents i
             JOIN verification_attempts r ON r.intent_id = i.id AND r.outcome = 'rejected'
            WHERE i.status = 'CONFIRMED' AND r.created_at < i.confirmed_at) AS failed_then_ok,
          (SELECT count(*) FROM user_balances WHERE balance < 0) AS negative
        """,
        start,
        now - pending_sla,
    )
    assert row is not None
    health = await ledger_db.health(pool)
    totals = ReconTotals(
        confirmed_intents=int(row["confirmed_intents"]),
        purchase_transactions=int(row["purchase_transactions"]),
        expected_credits=int(row["expected"]),
        applied_credits=int(row["applied"]),
        duplicate_signatures=int(row["duplicates"]),
        stale_pending=int(row["stale"]),
        failed_then_succeeded=int(row["failed_then_ok"]),
        negative_balances=int(row["negative"]),
        ledger_total=health.total,
        unbalanced_transactions=health.unbalanced_transactions,
        balance_mismatches=health.balance_mismatches,
    )
    return ReconSummary(since, now, totals, judge(totals))
