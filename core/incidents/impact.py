"""An incident's impact, measured from the database, not guessed: from its open time to now
(or to its close) — users and intents whose verification failed, by code (triage's window
summary); payments pending beyond the SLA; credits corrected by applied adjustments, with
their approvers; and the drift of the reconciliation runs at open and now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.incidents.rules import Incident
from core.triage import Window, WindowSummary, window_summary


@dataclass(frozen=True, slots=True)
class DriftPoint:
    run_id: int
    at: datetime
    mode: str
    zero_drift: bool
    drift_credits: int
    drift_tokens: int
    open_findings: int

    def line(self) -> str:
        drift = (
            "zero drift"
            if self.zero_drift
            else f"drift {self.drift_credits} credits, {self.drift_tokens} token units"
        )
        return (
            f"run #{self.run_id} ({self.mode}, {self.at:%Y-%m-%d %H:%M} UTC): {drift}, "
            f"{self.open_findings} open finding(s)"
        )


@dataclass(frozen=True, slots=True)
class Correction:
    adjustment_id: int
    user_id: str
    credits: int
    kind: str
    ledger_tx: int
    approvers: tuple[str, ...]
    requester: str
    reason: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class Impact:
    since: datetime
    until: datetime
    verify: WindowSummary
    failing_intents: int
    pending_beyond_sla: int
    corrections: tuple[Correction, ...]
    drift_at_open: DriftPoint | None
    drift_now: DriftPoint | None

    @property
    def credits_adjusted(self) -> int:
        return sum(c.credits for c in self.corrections)


def impact_lines(impact: Impact) -> list[str]:
    """The impact in plain lines (show, updates, the postmortem)."""
    v = impact.verify
    by_code = ", ".join(f"{code} {n}" for code, n in v.failures_by_code.items()) or "none"
    at_open = impact.drift_at_open.line() if impact.drift_at_open else "no run before the open"
    now = impact.drift_now.line() if impact.drift_now else "no run yet"
    return [
        f"failed verifications: {sum(v.failures_by_code.values())} ({by_code})",
        f"users affected: {v.failing_users}; intents affected: {impact.failing_intents}; "
        f"wallets: {v.failing_wallets}",
        f"payments pending beyond the SLA now: {impact.pending_beyond_sla}",
        f"credits adjusted: {impact.credits_adjusted:+d} in {len(impact.corrections)} "
        "applied adjustment(s)",
        f"drift at open: {at_open}",
        f"drift now: {now}",
    ]


def impact_facts(impact: Impact) -> dict[str, Any]:
    """The impact as the audit record of an update keeps it."""
    return {
        "failures_by_code": impact.verify.failures_by_code,
        "users_affected": impact.verify.failing_users,
        "intents_affected": impact.failing_intents,
        "pending_beyond_sla": impact.pending_beyond_sla,
        "credits_adjusted": impact.credits_adjusted,
        "drift_now": None if impact.drift_now is None else impact.drift_now.drift_credits,
    }


_RUN = """SELECT id, started_at, mode, zero_drift, drift_credits, drift_tokens, open_findings
          FROM recon_runs"""


def _point(row: Any) -> DriftPoint | None:
    if row is None:
        return None
    return DriftPoint(
        run_id=row["id"],
        at=row["started_at"],
        mode=row["mode"],
        zero_drift=row["zero_drift"],
        drift_credits=int(row["drift_credits"]),
        drift_tokens=int(row["drift_tokens"]),
        open_findings=int(row["open_findings"]),
    )


async def _corrections(
    conn: asyncpg.Connection, since: datetime, until: datetime
) -> tuple[Correction, ...]:
    rows = await conn.fetch(
        """SELECT a.id, a.user_id, a.credits, a.kind, a.applied_ledger_tx, a.requester,
                  a.reason, a.decided_at,
                  array(SELECT d.approver FROM adjustment_decisions d
                        WHERE d.adjustment_id = a.id AND d.decision = 'approve'
                        ORDER BY d.id) AS approvers
           FROM adjustments a
           WHERE a.status = 'APPLIED' AND a.decided_at >= $1 AND a.decided_at <= $2
           ORDER BY a.decided_at, a.id""",
        since,
        until,
    )
    return tuple(
        Correction(
            adjustment_id=r["id"],
            user_id=r["user_id"],
            credits=int(r["credits"]),
            kind=r["kind"],
            ledger_tx=int(r["applied_ledger_tx"]),
            approvers=tuple(r["approvers"]),
            requester=r["requester"],
            reason=r["reason"],
            applied_at=r["decided_at"],
        )
        for r in rows
    )


async def measure(
    pool: asyncpg.Pool, incident: Incident, *, now: datetime, pending_sla: timedelta
) -> Impact:
    """The impact from the incident's open to its close, or to `now` while it is open."""
    since = incident.opened_at
    until = max(incident.closed_at or now, since + timedelta(seconds=1))
    window = Window(since, min(until, since + timedelta(days=30)))
    verify = await window_summary(pool, window)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        failing = await conn.fetchval(
            """SELECT count(DISTINCT intent_id) FROM verification_attempts
               WHERE created_at >= $1 AND created_at < $2
                 AND (outcome IN ('rejected', 'conflict')
                      OR (outcome = 'pending' AND code = 'rpc_unavailable'))""",
            window.start,
            window.end,
        )
        pending = await conn.fetchval(
            """SELECT count(*) FROM purchase_intents
               WHERE status = 'PENDING' AND created_at < $1""",
            until - pending_sla,
        )
        at_open = await conn.fetchrow(
            _RUN + " WHERE started_at <= $1 ORDER BY id DESC LIMIT 1", since
        )
        latest = await conn.fetchrow(
            _RUN + " WHERE started_at <= $1 ORDER BY id DESC LIMIT 1", until
        )
        corrections = await _corrections(conn, since, until)
    return Impact(
        since=since,
        until=until,
        verify=verify,
        failing_intents=int(failing or 0),
        pending_beyond_sla=int(pending or 0),
        corrections=corrections,
        drift_at_open=_point(at_open),
        drift_now=_point(latest),
    )
