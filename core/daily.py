"""The figures of the daily summary: what the payment flow and the jobs did in a window."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from core import jobs


@dataclass(frozen=True, slots=True)
class DailyFigures:
    since: datetime
    until: datetime
    intents_created: int
    intents_confirmed: int
    intents_expired: int
    intents_rejected: int
    credits_purchased: int
    verify_attempts: dict[str, int]  # by outcome
    recovered: int  # intents credited by the recovery sweep
    pending_now: int
    stale_pending_now: int  # pending beyond the SLA
    adjustments_applied: int
    adjustment_credits: int  # net credits applied by adjustments
    adjustments_waiting: int
    open_incidents: int
    job_failures: dict[str, int] = field(default_factory=dict)


async def daily_figures(
    pool: asyncpg.Pool, *, since: datetime, until: datetime, pending_sla: timedelta
) -> DailyFigures:
    """Counts over [since, until); the `_now` figures are as of `until`. One SQL statement
    (one round trip, one snapshot), hence its length."""
    row = await pool.fetchrow(
        """
        SELECT
          (SELECT count(*) FROM purchase_intents
            WHERE created_at >= $1 AND created_at < $2) AS created,
          (SELECT count(*) FROM purchase_intents
            WHERE confirmed_at >= $1 AND confirmed_at < $2) AS confirmed,
          (SELECT count(*) FROM audit_log
            WHERE action = 'intent.expire' AND at >= $1 AND at < $2) AS expired,
          (SELECT count(*) FROM audit_log
            WHERE action = 'intent.reject' AND at >= $1 AND at < $2) AS rejected,
          (SELECT coalesce(sum(e.amount), 0) FROM ledger_transactions t
             JOIN ledger_entries e ON e.transaction_id = t.id
             JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
            WHERE t.kind = 'purchase' AND t.created_at >= $1 AND t.created_at < $2) AS purchased,
          (SELECT count(*) FROM verification_attempts
            WHERE source = 'recovery' AND outcome = 'confirmed'
              AND created_at >= $1 AND created_at < $2) AS recovered,
          (SELECT count(*) FROM purchase_intents WHERE status = 'PENDING') AS pending,
          (SELECT count(*) FROM purchase_intents
            WHERE status = 'PENDING' AND created_at < $3) AS stale,
          (SELECT count(*) FROM adjustments
            WHERE status = 'APPLIED' AND decided_at >= $1 AND decided_at < $2) AS applied,
          (SELECT coalesce(sum(credits), 0) FROM adjustments
            WHERE status = 'APPLIED' AND decided_at >= $1 AND decided_at < $2) AS adj_credits,
          (SELECT count(*) FROM adjustments WHERE status = 'PENDING_APPROVAL') AS waiting,
          (SELECT count(*) FROM incidents WHERE status = 'open') AS incidents
        """,
        since,
        until,
        until - pending_sla,
    )
    assert row is not None
    attempts = await pool.fetch(
        """SELECT outcome, count(*) AS n FROM verification_attempts
           WHERE created_at >= $1 AND created_at < $2 GROUP BY outcome ORDER BY outcome""",
        since,
        until,
    )
    return DailyFigures(
        since=since,
        until=until,
        intents_created=int(row["created"]),
        intents_confirmed=int(row["confirmed"]),
        intents_expired=int(row["expired"]),
        intents_rejected=int(row["rejected"]),
        credits_purchased=int(row["purchased"]),
        verify_attempts={r["outcome"]: int(r["n"]) for r in attempts},
        recovered=int(row["recovered"]),
        pending_now=int(row["pending"]),
        stale_pending_now=int(row["stale"]),
        adjustments_applied=int(row["applied"]),
        adjustment_credits=int(row["adj_credits"]),
        adjustments_waiting=int(row["waiting"]),
        open_incidents=int(row["incidents"]),
        job_failures=await jobs.failures_since(pool, since),
    )
