"""Reconciliation: the runbook's comparisons and anomaly checks, stored run after run.

    1. Compare totals: verified purchase intents vs confirmed credit transactions; sum of
       expected credits vs applied credits; the ledger sums to zero per transaction and
       overall; cached balances equal their entries.
    2. Check anomalies: duplicate tx signatures, intents stuck PENDING beyond the SLA,
       failed verifications with an eventually successful tx, unexpected negative
       balances — and overpayments, late payments, confirmed intents without their credit
       (or credits without a confirmed intent), and payments that reached the treasury on
       chain but credited nothing.
    3. Resolve: findings keep a stable fingerprint while open (`core.recon_tickets` groups
       them into tickets); a re-run marks those no longer found resolved, and says whether
       the drift is zero.

One run = one REPEATABLE READ snapshot: set-based SQL (`core.recon_sql`, `core.recon_checks`)
reads facts, pure rules (`core.recon_rules`, `core.recon_totals`) decide, `core.recon_store`
keeps the run and its findings, with an audit record (`recon.run`). Runs are serialized by
an advisory lock. A full run reads everything; an incremental run (the default once a run
exists) only what changed since the previous run's watermark, plus every open finding; a
window run the intents created in a window. The chain side (`core.recon_chain`) is read
before the snapshot and is optional.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core import audit, db
from core.audit import Actor
from core.config import PaymentConfig
from core.errors import InvalidInput
from core.recon import chain as recon_chain
from core.recon import checks as recon_checks
from core.recon import scope as recon_sql
from core.recon import store as recon_store
from core.recon.chain import NOT_CHECKED, ChainLimits, ChainLookup, RpcChainLookup
from core.recon.rules import (
    Finding,
    FindingKind,
    Severity,
    attempt_findings,
    balance_findings,
    chain_unchecked_finding,
    intent_findings,
    ledger_total_findings,
    payment_findings,
    recheck_unmatched,
    signature_findings,
    tx_findings,
)
from core.recon.totals import (
    ReconTotals,
    RunMode,
    Watermark,
    carried_unchecked,
    choose_mode,
    judge,
    ordered,
    settle,
    totals_of,
)

__all__ = [
    "ChainLimits",
    "ChainLookup",
    "Finding",
    "FindingKind",
    "ReconRun",
    "ReconTotals",
    "RpcChainLookup",
    "Severity",
    "latest_run",
    "open_findings",
    "run_reconciliation",
]

RECON_LOCK_KEY = 7_305_101_004  # pg_advisory_lock key: one reconciliation at a time
DEFAULT_CHAIN_LIMITS = ChainLimits()


@dataclass(frozen=True)
class ReconRun:
    """A stored run: its totals, the findings open after it, what it found new and resolved."""

    id: int
    started_at: datetime
    finished_at: datetime
    full: bool
    window_start: datetime | None
    window_end: datetime
    totals: ReconTotals
    findings: list[Finding]
    new_findings: list[Finding]
    resolved_findings: list[Finding]
    drift_credits: int
    drift_tokens: int
    zero_drift: bool
    chain_checked: bool
    mode: str = RunMode.FULL.value

    @property
    def blocking_findings(self) -> list[Finding]:
        """The open findings that count against zero drift (all but info)."""
        return [f for f in self.findings if f.blocking]


async def run_reconciliation(
    pool: asyncpg.Pool,
    chain: ChainLookup | None,
    *,
    now: datetime,
    actor: Actor,
    pending_sla: timedelta,
    payment: PaymentConfig,
    full: bool = False,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    ignore_signatures: Collection[str] = (),
    chain_limits: ChainLimits = DEFAULT_CHAIN_LIMITS,
) -> ReconRun:
    """Run the checks, store the run and its findings, audit it (`recon.run`).

    With `window_start`, over intents created in [window_start, window_end or now); with
    `full` (or when no run exists yet) over everything; otherwise incrementally from the
    previous run's watermark. Open findings are always checked again. `chain` None skips
    the chain side (`chain_checked` False, no finding); a failing chain gives a
    `chain_unchecked` finding. `ignore_signatures`: known payments never meant to credit
    (the smoke test's). Waits for a run already in progress.
    """
    async with db.session(pool) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", RECON_LOCK_KEY)
        try:
            return await _run(
                conn,
                pool,
                chain,
                now=now,
                actor=actor,
                pending_sla=pending_sla,
                payment=payment,
                full=full,
                window=(window_start, window_end),
                ignore=ignore_signatures,
                limits=chain_limits,
            )
        finally:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", RECON_LOCK_KEY)
            except db.DATABASE_ERRORS:
                # a lock left on a pooled connection would stop every later run
                conn.terminate()


async def _run(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    chain: ChainLookup | None,
    *,
    now: datetime,
    actor: Actor,
    pending_sla: timedelta,
    payment: PaymentConfig,
    full: bool,
    window: tuple[datetime | None, datetime | None],
    ignore: Collection[str],
    limits: ChainLimits,
) -> ReconRun:
    clock = time.monotonic()
    previous = await recon_store.last_watermarked(conn)
    mode = choose_mode(
        full=full,
        window_start=window[0],
        has_watermark=previous is not None and previous.watermark is not None,
    )
    span: tuple[datetime, datetime] | None = None
    if mode is RunMode.WINDOW:
        assert window[0] is not None
        span = (window[0], window[1] or now)
        if span[0] >= span[1]:
            raise InvalidInput("the window must end after it starts", code="invalid_window")
    since = previous.watermark if mode is RunMode.INCREMENTAL and previous else None
    cutoff = now - pending_sla

    observation = NOT_CHECKED
    if chain is not None:
        references = await recon_checks.reference_candidates(
            conn,
            limit=limits.reference_lookups,
            changed_since=None if since is None else since.horizon,
            window=span,
        )
        observation = await recon_chain.observe(
            chain,
            payment,
            references=references,
            known=functools.partial(recon_checks.known_signatures, conn),
            ignore=ignore,
            limits=limits,
        )

    horizon = await recon_sql.horizon(conn)
    async with conn.transaction(isolation="repeatable_read"):
        snapshot, snapshot_time = await recon_sql.begin(conn)
        before = await recon_store.open_now(conn)
        await recon_sql.add_open(conn, before)
        if mode is RunMode.FULL:
            flows, _ = await recon_sql.add_full(conn, pool)
            await recon_sql.add_stale(conn, cutoff)
        elif mode is RunMode.INCREMENTAL:
            assert previous is not None
            assert since is not None
            await recon_sql.add_changed(conn, since.horizon)
            await recon_sql.add_stale(conn, cutoff)
            flows = previous.totals.flows + await recon_sql.changed_flows(conn, since)
        else:
            assert span is not None
            await recon_sql.add_window(conn, *span)
            await recon_sql.add_stale(conn, cutoff, span)
            flows = await recon_sql.window_flows(conn, *span)
        await recon_sql.add_derived(conn)
        corrections, correction_credits = await recon_sql.corrections(conn, span)

        found: list[Finding] = []
        for intent in await recon_checks.intent_facts(conn, cutoff):
            found += intent_findings(intent, now, pending_sla)
        for attempt in await recon_checks.attempt_facts(conn):
            found += attempt_findings(attempt)
        for sig in await recon_checks.signature_facts(conn):
            found += signature_findings(sig)
        for balance in await recon_checks.balance_facts(conn):
            found += balance_findings(balance)
        for tx in await recon_checks.tx_facts(conn):
            found += tx_findings(tx)
        found += ledger_total_findings(flows.ledger_total)
        found += await _chain_findings(conn, observation, before)

        settlement = settle(before, found, carried_unchecked(mode, observation.attempted))
        totals = totals_of(
            flows,
            correction_credits=correction_credits,
            corrections=corrections,
            findings=settlement.open,
        )
        drift = judge(totals, settlement.open)
        finished = now + timedelta(seconds=time.monotonic() - clock)
        record = recon_store.NewRun(
            started_at=now,
            finished_at=finished,
            mode=mode,
            window_start=None if span is None else span[0],
            window_end=now if span is None else span[1],
            watermark=None if span else Watermark(horizon, snapshot, snapshot_time),
            totals=totals,
            drift_credits=drift.credits,
            drift_tokens=drift.tokens,
            zero_drift=drift.zero,
            chain_checked=observation.checked,
            actor=actor.id,
            source=actor.source,
        )
        run_id = await recon_store.save(conn, record, settlement)
        await audit.record(
            conn,
            actor,
            action="recon.run",
            subject=f"recon_run:{run_id}",
            after=_audit_facts(record, settlement.open, settlement.new, settlement.resolved)
            | {"chain": observation.to_json()},
        )
    return ReconRun(
        id=run_id,
        started_at=record.started_at,
        finished_at=record.finished_at,
        full=mode is RunMode.FULL,
        window_start=record.window_start,
        window_end=record.window_end,
        totals=totals,
        findings=settlement.open,
        new_findings=settlement.new,
        resolved_findings=settlement.resolved,
        drift_credits=drift.credits,
        drift_tokens=drift.tokens,
        zero_drift=drift.zero,
        chain_checked=observation.checked,
        mode=mode.value,
    )


async def _chain_findings(
    conn: asyncpg.Connection, observation: recon_chain.ChainObservation, before: list[Finding]
) -> list[Finding]:
    """Unmatched payments seen now; those open before re-checked through the database."""
    found: list[Finding] = []
    for facts in await recon_chain.payment_facts(conn, observation.payments):
        found += payment_findings(facts)
    seen = {p.signature for p in observation.payments}
    stored = [
        f
        for f in before
        if f.kind == FindingKind.UNMATCHED_PAYMENT and f.signatures and f.signatures[0] not in seen
    ]
    settled = await recon_checks.settled_signatures(conn, [f.signatures[0] for f in stored])
    for f in stored:
        credited, adjusted = settled.get(f.signatures[0], (False, False))
        found += recheck_unmatched(f, credited=credited, adjusted=adjusted)
    if observation.attempted and not observation.checked:
        found.append(chain_unchecked_finding(observation.error or "unknown error"))
    return found


def _audit_facts(
    run: recon_store.NewRun, open_: list[Finding], new: list[Finding], resolved: list[Finding]
) -> dict[str, Any]:
    return {
        "mode": run.mode.value,
        "window_start": None if run.window_start is None else run.window_start.isoformat(),
        "window_end": run.window_end.isoformat(),
        "zero_drift": run.zero_drift,
        "drift_credits": run.drift_credits,
        "drift_tokens": str(run.drift_tokens),
        "expected_credits": run.totals.expected_credits,
        "applied_credits": run.totals.applied_credits,
        "open_findings": len(open_),
        "new_findings": [f.fingerprint for f in new][:50],
        "resolved_findings": [f.fingerprint for f in resolved][:50],
        "chain_checked": run.chain_checked,
    }


async def latest_run(pool: asyncpg.Pool) -> ReconRun | None:
    """The latest stored run with the findings open after it, or None before any run."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        row = await recon_store.latest(conn)
        if row is None:
            return None
        still_open, new, resolved = await recon_store.findings_of(conn, row.id)
    return ReconRun(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        full=row.mode is RunMode.FULL,
        window_start=row.window_start,
        window_end=row.window_end,
        totals=row.totals,
        findings=ordered(still_open),
        new_findings=ordered(new),
        resolved_findings=ordered(resolved),
        drift_credits=row.drift_credits,
        drift_tokens=row.drift_tokens,
        zero_drift=row.zero_drift,
        chain_checked=row.chain_checked,
        mode=row.mode.value,
    )


async def open_findings(pool: asyncpg.Pool) -> list[Finding]:
    """Every finding open now, critical first."""
    return ordered(await recon_store.open_now(pool))
