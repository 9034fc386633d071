"""Stored reconciliation runs and findings (tables of migration 0004).

A finding row lives from the run that first found it (`first_seen_run`) to the run that no
longer did (`resolved_run`); `run_id` is the last run that found it changed (its amounts or
detail) — an unchanged finding is not rewritten run after run. So the findings open after
run R are those with first_seen_run <= R and no resolved_run at or before R.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from core.recon.rules import Finding
from core.recon.totals import ReconTotals, RunMode, Settlement, Watermark

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_FINDING_COLUMNS = """fingerprint, kind, severity, user_ids, signatures, intent_ids,
    ledger_tx_ids, credits, tokens, detail"""


def finding_from_row(row: Any) -> Finding:
    return Finding(
        fingerprint=row["fingerprint"],
        kind=row["kind"],
        severity=row["severity"],
        user_ids=tuple(row["user_ids"]),
        signatures=tuple(row["signatures"]),
        intent_ids=tuple(row["intent_ids"]),
        credits=int(row["credits"]),
        tokens=int(row["tokens"]),
        detail=row["detail"],
        ledger_tx_ids=tuple(int(t) for t in row["ledger_tx_ids"]),
    )


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "fingerprint": f.fingerprint,
        "kind": f.kind,
        "severity": f.severity,
        "user_ids": list(f.user_ids),
        "signatures": list(f.signatures),
        "intent_ids": list(f.intent_ids),
        "ledger_tx_ids": list(f.ledger_tx_ids),
        "credits": f.credits,
        "tokens": str(f.tokens),
        "detail": f.detail,
    }


@dataclass(frozen=True, slots=True)
class RunRow:
    """A stored run, as the table holds it."""

    id: int
    started_at: datetime
    finished_at: datetime
    mode: RunMode
    window_start: datetime | None
    window_end: datetime
    watermark: Watermark | None
    totals: ReconTotals
    drift_credits: int
    drift_tokens: int
    zero_drift: bool
    chain_checked: bool


def _json(value: Any) -> Any:
    # pools made by core.db decode jsonb; a bare connection hands back text
    return json.loads(value) if isinstance(value, str) else value


def _run_from_row(row: Any) -> RunRow:
    watermark = _json(row["watermark"])
    return RunRow(
        id=row["id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        mode=RunMode(row["mode"]),
        window_start=row["window_start"],
        window_end=row["window_end"],
        watermark=None if watermark is None else Watermark.from_json(watermark),
        totals=ReconTotals.from_json(_json(row["totals"])),
        drift_credits=int(row["drift_credits"]),
        drift_tokens=int(row["drift_tokens"]),
        zero_drift=row["zero_drift"],
        chain_checked=row["chain_checked"],
    )


_RUN_COLUMNS = """id, started_at, finished_at, mode, window_start, window_end, watermark, totals,
    drift_credits, drift_tokens, zero_drift, chain_checked"""


async def last_watermarked(conn: Conn) -> RunRow | None:
    """The latest full or incremental run: where the next incremental run starts."""
    row = await conn.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM recon_runs WHERE watermark IS NOT NULL "  # noqa: S608
        "ORDER BY id DESC LIMIT 1"
    )
    return None if row is None else _run_from_row(row)


async def latest(conn: Conn) -> RunRow | None:
    row = await conn.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM recon_runs ORDER BY id DESC LIMIT 1"  # noqa: S608
    )
    return None if row is None else _run_from_row(row)


async def open_now(conn: Conn) -> list[Finding]:
    """Every finding open now."""
    rows = await conn.fetch(
        f"SELECT {_FINDING_COLUMNS} FROM recon_findings WHERE status = 'open'"  # noqa: S608
    )
    return [finding_from_row(r) for r in rows]


async def findings_of(
    conn: Conn, run_id: int
) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """(open after the run, new in it, resolved by it)."""
    rows = await conn.fetch(
        f"""SELECT {_FINDING_COLUMNS}, first_seen_run, resolved_run FROM recon_findings
            WHERE first_seen_run <= $1 AND (status = 'open' OR resolved_run >= $1)""",  # noqa: S608
        run_id,
    )
    still = [r for r in rows if r["resolved_run"] is None or r["resolved_run"] > run_id]
    return (
        [finding_from_row(r) for r in still],
        [finding_from_row(r) for r in still if r["first_seen_run"] == run_id],
        [finding_from_row(r) for r in rows if r["resolved_run"] == run_id],
    )


@dataclass(frozen=True, slots=True)
class NewRun:
    started_at: datetime
    finished_at: datetime
    mode: RunMode
    window_start: datetime | None
    window_end: datetime
    watermark: Watermark | None
    totals: ReconTotals
    drift_credits: int
    drift_tokens: int
    zero_drift: bool
    chain_checked: bool
    actor: str
    source: str


async def save(conn: asyncpg.Connection, run: NewRun, settlement: Settlement) -> int:
    """Store the run and move its findings: insert the new, refresh those found again, mark
    the resolved. Set-based, inside the caller's transaction. Returns the run id."""
    run_id = int(
        await conn.fetchval(
            """INSERT INTO recon_runs (started_at, finished_at, mode, full_run, window_start,
                   window_end, watermark, totals, drift_credits, drift_tokens, zero_drift,
                   chain_checked, open_findings, blocking_findings, new_findings,
                   resolved_findings, actor, source)
               VALUES ($1, $2, $3, $3 = 'full', $4, $5, $6::text::jsonb, $7::text::jsonb, $8, $9,
                       $10, $11, $12, $13, $14, $15, $16, $17)
               RETURNING id""",
            run.started_at,
            run.finished_at,
            run.mode.value,
            run.window_start,
            run.window_end,
            None if run.watermark is None else json.dumps(run.watermark.to_json()),
            json.dumps(run.totals.to_json()),
            run.drift_credits,
            run.drift_tokens,
            run.zero_drift,
            run.chain_checked,
            len(settlement.open),
            sum(1 for f in settlement.open if f.blocking),
            len(settlement.new),
            len(settlement.resolved),
            run.actor,
            run.source,
        )
    )
    await _upsert(conn, run_id, settlement.new, insert=True)
    await _upsert(conn, run_id, settlement.changed)
    await conn.execute(
        """UPDATE recon_findings SET status = 'resolved', resolved_run = $1
           WHERE status = 'open' AND fingerprint = ANY ($2::text[])""",
        run_id,
        [f.fingerprint for f in settlement.resolved],
    )
    return run_id


_ROWS = """SELECT * FROM jsonb_to_recordset($2::text::jsonb) AS x(
    fingerprint text, kind text, severity text, user_ids text[], signatures text[],
    intent_ids text[], ledger_tx_ids bigint[], credits bigint, tokens numeric, detail text)"""


async def _upsert(
    conn: asyncpg.Connection, run_id: int, findings: Sequence[Finding], *, insert: bool = False
) -> None:
    if not findings:
        return
    rows = json.dumps([_finding_json(f) for f in findings])
    if insert:
        await conn.execute(
            f"""INSERT INTO recon_findings ({_FINDING_COLUMNS}, first_seen_run, run_id)
                SELECT {_FINDING_COLUMNS}, $1, $1 FROM ({_ROWS}) r""",  # noqa: S608
            run_id,
            rows,
        )
        return
    # found again: rewritten only when its amounts or detail moved
    await conn.execute(
        f"""UPDATE recon_findings f SET run_id = $1, severity = r.severity,
               user_ids = r.user_ids, signatures = r.signatures, intent_ids = r.intent_ids,
               ledger_tx_ids = r.ledger_tx_ids, credits = r.credits, tokens = r.tokens,
               detail = r.detail
            FROM ({_ROWS}) r
            WHERE f.fingerprint = r.fingerprint AND f.status = 'open'
              AND (f.severity, f.user_ids, f.signatures, f.intent_ids,
                   f.ledger_tx_ids, f.credits, f.tokens, f.detail)
                  IS DISTINCT FROM (r.severity, r.user_ids, r.signatures, r.intent_ids,
                   r.ledger_tx_ids, r.credits, r.tokens, r.detail)""",  # noqa: S608
        run_id,
        rows,
    )
