"""Stored reconciliation runs and findings (tables of migration 0004).

A finding row lives from the run that first found it (`first_seen_run`) to the run that no
longer did (`resolved_run`); `run_id` is the last run that found it changed (its amounts or
detail) — an unchanged finding is not rewritten run after run. So the findings open after
run R are those with first_seen_run <= R and no resolved_run at or before R.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from core.audit import Actor
from core.recon.findings import Finding, FindingKind, Severity
from core.recon.totals import Flows, ReconRun, ReconTotals, RunMode, Watermark, ordered

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_FINDING_COLUMNS = """fingerprint, kind, severity, user_ids, signatures, intent_ids,
    ledger_tx_ids, credits, tokens, detail"""


def finding_from_row(row: Any) -> Finding:
    """A `recon_findings` row; its kind and severity text become the enums here."""
    return Finding(
        fingerprint=row["fingerprint"],
        kind=FindingKind(row["kind"]),
        severity=Severity(row["severity"]),
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
        "kind": f.kind.value,
        "severity": f.severity.value,
        "user_ids": list(f.user_ids),
        "signatures": list(f.signatures),
        "intent_ids": list(f.intent_ids),
        "ledger_tx_ids": list(f.ledger_tx_ids),
        "credits": f.credits,
        "tokens": str(f.tokens),
        "detail": f.detail,
    }


def _json(value: Any) -> Any:
    # pools made by core.db decode jsonb; a bare connection hands back text
    return json.loads(value) if isinstance(value, str) else value


def run_from_row(
    row: Any,
    findings: Sequence[Finding] = (),
    new: Sequence[Finding] = (),
    resolved: Sequence[Finding] = (),
) -> ReconRun:
    """A `recon_runs` row, with the findings open after it, new in it and resolved by it."""
    watermark = _json(row["watermark"])
    return ReconRun(
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
        findings=ordered(findings),
        new_findings=ordered(new),
        resolved_findings=ordered(resolved),
    )


_RUN_COLUMNS = """id, started_at, finished_at, mode, window_start, window_end, watermark, totals,
    drift_credits, drift_tokens, zero_drift, chain_checked"""


async def last_watermark(conn: Conn) -> tuple[Watermark, Flows] | None:
    """Where the next incremental run starts: the latest full or incremental run's watermark
    and the flows it counted."""
    row = await conn.fetchrow(
        "SELECT watermark, totals FROM recon_runs WHERE watermark IS NOT NULL "
        "ORDER BY id DESC LIMIT 1"
    )
    if row is None:
        return None
    totals = ReconTotals.from_json(_json(row["totals"]))
    return Watermark.from_json(_json(row["watermark"])), totals.flows


async def latest(conn: Conn) -> ReconRun | None:
    """The latest run with its findings; `conn` in one snapshot (repeatable read)."""
    row = await conn.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM recon_runs ORDER BY id DESC LIMIT 1"  # noqa: S608
    )
    if row is None:
        return None
    return run_from_row(row, *await findings_of(conn, row["id"]))


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


async def next_run_id(conn: asyncpg.Connection) -> int:
    """An id for the run about to be stored, so the run is whole before it is saved."""
    return int(await conn.fetchval("SELECT nextval(pg_get_serial_sequence('recon_runs', 'id'))"))


async def save(
    conn: asyncpg.Connection, run: ReconRun, changed: Sequence[Finding], actor: Actor
) -> None:
    """Store the run and move its findings: insert the new, refresh those found again with
    other amounts or detail (`changed`), mark the resolved. Set-based, inside the caller's
    transaction."""
    await conn.execute(
        """INSERT INTO recon_runs (id, started_at, finished_at, mode, full_run, window_start,
               window_end, watermark, totals, drift_credits, drift_tokens, zero_drift,
               chain_checked, open_findings, blocking_findings, new_findings,
               resolved_findings, actor, source)
           VALUES ($1, $2, $3, $4, $4 = 'full', $5, $6, $7::text::jsonb, $8::text::jsonb, $9,
                   $10, $11, $12, $13, $14, $15, $16, $17, $18)""",
        run.id,
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
        len(run.findings),
        len(run.blocking_findings),
        len(run.new_findings),
        len(run.resolved_findings),
        actor.id,
        actor.source,
    )
    run_id = run.id
    await _upsert(conn, run_id, run.new_findings, insert=True)
    await _upsert(conn, run_id, changed)
    await conn.execute(
        """UPDATE recon_findings SET status = 'resolved', resolved_run = $1
           WHERE status = 'open' AND fingerprint = ANY ($2::text[])""",
        run_id,
        [f.fingerprint for f in run.resolved_findings],
    )


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
