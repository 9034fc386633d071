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

import time
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core import audit, db
from core.audit import Actor
from core.config import PaymentConfig
from core.recon import chain as recon_chain
from core.recon import checks as recon_checks
from core.recon import scope as recon_sql
from core.recon import store as recon_store
from core.recon import treasury as recon_treasury
from core.recon.chain import NOT_CHECKED, ChainLimits, ChainLookup
from core.recon.findings import Finding, FindingKind
from core.recon.reading import Read, Scope, decide_scope, observe_chain, read_scope
from core.recon.rules import (
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
    ReconRun,
    RunMode,
    carried_unchecked,
    judge,
    ordered,
    settle,
    totals_of,
)

__all__ = ["latest_run", "open_findings", "run_reconciliation"]

RECON_LOCK_KEY = 7_305_101_004  # pg_advisory_lock key: one reconciliation at a time
DEFAULT_CHAIN_LIMITS = ChainLimits()
DEFAULT_EXPIRY_GRACE = timedelta(seconds=600)  # PAYOPS_EXPIRY_GRACE_SECONDS' default


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
    expiry_grace: timedelta = DEFAULT_EXPIRY_GRACE,
) -> ReconRun:
    """Run the checks, store the run and its findings, audit it (`recon.run`).

    With `window_start`, over intents created in [window_start, window_end or now); with
    `full` (or when no run exists yet) over everything; otherwise incrementally from the
    previous run's watermark. Open findings are always checked again. `chain` None skips
    the chain side (`chain_checked` False, no finding); a failing chain gives a
    `chain_unchecked` finding. `ignore_signatures`: known payments never meant to credit
    (the smoke test's). `expiry_grace` with `pending_sla` gives an intent's deadline (a bound
    payment to a PENDING intent before it is no finding). Waits for a run already in progress.

    While the treasury watcher runs (its cursor exists), its recorded flows are the chain
    side (`core.recon.treasury`) and the chain is read only for the treasury's balance;
    before it ever ran, the windowed look of `core.recon.chain`.
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
                grace=expiry_grace,
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
    grace: timedelta,
    payment: PaymentConfig,
    full: bool,
    window: tuple[datetime | None, datetime | None],
    ignore: Collection[str],
    limits: ChainLimits,
) -> ReconRun:
    """Scope, observe the chain (outside the snapshot), then read, classify and record in
    one REPEATABLE READ transaction."""
    clock = time.monotonic()
    scope = await decide_scope(
        conn, now=now, full=full, window=window, pending_sla=pending_sla, grace=grace, ignore=ignore
    )
    account = payment.treasury_token_account
    watched = await recon_treasury.watched(conn, account)
    observation = replace(NOT_CHECKED, source="watcher") if watched else NOT_CHECKED
    if chain is not None and watched:
        observation = await recon_treasury.observe_books(conn, chain, account)
    elif chain is not None:
        observation = await observe_chain(conn, chain, payment, scope, ignore, limits)
    horizon = await recon_sql.horizon(conn)
    async with conn.transaction(isolation="repeatable_read"):
        read = await read_scope(conn, pool, scope, horizon)
        found = await _classify(conn, scope, read, observation, now=now, account=account)
        finished = now + timedelta(seconds=time.monotonic() - clock)
        return await _record(
            conn, scope, read, found, observation, actor=actor, started=now, finished=finished
        )


async def _classify(
    conn: asyncpg.Connection,
    scope: Scope,
    read: Read,
    observation: recon_chain.ChainObservation,
    *,
    now: datetime,
    account: str,
) -> list[Finding]:
    """Every finding the facts in scope show (pure rules over set-based reads)."""
    found: list[Finding] = []
    for intent in await recon_checks.intent_facts(conn, scope.cutoff):
        found += intent_findings(intent, now, scope.pending_sla)
    for attempt in await recon_checks.attempt_facts(conn):
        found += attempt_findings(attempt)
    for sig in await recon_checks.signature_facts(conn):
        found += signature_findings(sig)
    for balance in await recon_checks.balance_facts(conn):
        found += balance_findings(balance)
    for tx in await recon_checks.tx_facts(conn):
        found += tx_findings(tx)
    found += ledger_total_findings(read.flows.ledger_total)
    if observation.source == "watcher":
        found += await recon_treasury.findings(
            conn,
            observation,
            account,
            scope=recon_treasury.FlowScope(
                everything=scope.mode is RunMode.FULL,
                since=None if scope.since is None else scope.since.horizon,
                window=scope.span,
            ),
            now=now,
            pending_sla=scope.pending_sla,
            grace=scope.grace,
            ignore=scope.ignore,
        )
    found += await _chain_findings(conn, observation, read.before)
    return found


async def _record(
    conn: asyncpg.Connection,
    scope: Scope,
    read: Read,
    found: list[Finding],
    observation: recon_chain.ChainObservation,
    *,
    actor: Actor,
    started: datetime,
    finished: datetime,
) -> ReconRun:
    """Settle against the findings open before, judge the drift, store and audit the run."""
    compared = observation.balance is not None and observation.balance.compared
    carried = carried_unchecked(scope.mode, observation.attempted, balance_compared=compared)
    settlement = settle(read.before, found, carried)
    totals = totals_of(
        read.flows,
        correction_credits=read.correction_credits,
        corrections=read.corrections,
        findings=settlement.open,
    )
    drift = judge(totals, settlement.open)
    run = ReconRun(
        id=await recon_store.next_run_id(conn),
        started_at=started,
        finished_at=finished,
        mode=scope.mode,
        window_start=None if scope.span is None else scope.span[0],
        window_end=started if scope.span is None else scope.span[1],
        watermark=read.watermark,
        totals=totals,
        drift_credits=drift.credits,
        drift_tokens=drift.tokens,
        zero_drift=drift.zero,
        chain_checked=observation.checked,
        findings=settlement.open,
        new_findings=settlement.new,
        resolved_findings=settlement.resolved,
    )
    await recon_store.save(conn, run, settlement.changed, actor)
    await audit.record(
        conn,
        actor,
        action="recon.run",
        subject=f"recon_run:{run.id}",
        after=_audit_facts(run) | {"chain": observation.to_json()},
    )
    return run


async def _chain_findings(
    conn: asyncpg.Connection, observation: recon_chain.ChainObservation, before: list[Finding]
) -> list[Finding]:
    """Unmatched payments seen now; those open before re-checked through the database (those
    the watcher recorded are its flows' findings)."""
    found: list[Finding] = []
    for facts in await recon_chain.payment_facts(conn, observation.payments):
        found += payment_findings(facts)
    seen = {p.signature for p in observation.payments}
    stored = [
        f
        for f in before
        if f.kind == FindingKind.UNMATCHED_PAYMENT and f.signatures and f.signatures[0] not in seen
    ]
    if observation.source == "watcher":
        flows = await recon_treasury.recorded(conn, [f.signatures[0] for f in stored])
        stored = [f for f in stored if f.signatures[0] not in flows]
    settled = await recon_checks.settled_signatures(conn, [f.signatures[0] for f in stored])
    for f in stored:
        credited, adjusted = settled.get(f.signatures[0], (False, False))
        found += recheck_unmatched(f, credited=credited, adjusted=adjusted)
    if observation.attempted and not observation.checked:
        found.append(chain_unchecked_finding(observation.error or "unknown error"))
    return found


def _audit_facts(run: ReconRun) -> dict[str, Any]:
    return {
        "mode": run.mode.value,
        "window_start": None if run.window_start is None else run.window_start.isoformat(),
        "window_end": run.window_end.isoformat(),
        "zero_drift": run.zero_drift,
        "drift_credits": run.drift_credits,
        "drift_tokens": str(run.drift_tokens),
        "expected_credits": run.totals.expected_credits,
        "applied_credits": run.totals.applied_credits,
        "open_findings": len(run.findings),
        "new_findings": [f.fingerprint for f in run.new_findings][:50],
        "resolved_findings": [f.fingerprint for f in run.resolved_findings][:50],
        "chain_checked": run.chain_checked,
    }


async def latest_run(pool: asyncpg.Pool) -> ReconRun | None:
    """The latest stored run with the findings open after it, or None before any run."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        return await recon_store.latest(conn)


async def open_findings(pool: asyncpg.Pool) -> list[Finding]:
    """Every finding open now, critical first."""
    return ordered(await recon_store.open_now(pool))
