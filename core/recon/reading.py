"""A reconciliation run's scope and its reads: what the run covers, decided before it reads
anything (everything, what changed since the previous run's watermark, or the intents of a
window; the cutoff past which a PENDING intent is stale), the windowed look at the chain for
that scope (outside the snapshot), and what the snapshot holds for it — the scope tables
filled (`core.recon.scope`), the flows, the corrections, and the watermark the next
incremental run starts from.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from core.config import PaymentConfig
from core.errors import InvalidInput
from core.recon import chain as recon_chain
from core.recon import checks as recon_checks
from core.recon import scope as recon_sql
from core.recon import store as recon_store
from core.recon.chain import ChainLimits, ChainLookup
from core.recon.findings import Finding
from core.recon.totals import Flows, RunMode, Watermark, choose_mode


@dataclass(frozen=True, slots=True)
class Scope:
    """What a run covers, decided before it reads anything."""

    mode: RunMode
    span: tuple[datetime, datetime] | None  # window runs: intents created in [start, end)
    since: Watermark | None  # incremental runs: where the previous run stopped
    base: Flows  # incremental runs: the previous run's flows, which the changes add to
    cutoff: datetime  # intents created before it and still PENDING are stale
    pending_sla: timedelta
    grace: timedelta  # after expiry: with the SLA, when a PENDING intent's time is up
    ignore: frozenset[str]  # payments never meant to credit (the smoke test's)


@dataclass(frozen=True, slots=True)
class Read:
    """What the snapshot holds for a run's scope."""

    before: list[Finding]  # open before the run
    flows: Flows
    corrections: int
    correction_credits: int
    watermark: Watermark | None


async def decide_scope(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    full: bool,
    window: tuple[datetime | None, datetime | None],
    pending_sla: timedelta,
    grace: timedelta,
    ignore: Collection[str],
) -> Scope:
    """What the run covers: the mode (`choose_mode`), its window or the previous run's
    watermark and flows, and the stale cutoff. A window must end after it starts."""
    previous = await recon_store.last_watermark(conn)
    mode = choose_mode(full=full, window_start=window[0], has_watermark=previous is not None)
    span: tuple[datetime, datetime] | None = None
    if mode is RunMode.WINDOW:
        assert window[0] is not None
        span = (window[0], window[1] or now)
        if span[0] >= span[1]:
            raise InvalidInput("the window must end after it starts", code="invalid_window")
    since, base = previous if mode is RunMode.INCREMENTAL and previous else (None, Flows())
    return Scope(
        mode,
        span,
        since,
        base,
        cutoff=now - pending_sla,
        pending_sla=pending_sla,
        grace=grace,
        ignore=frozenset(ignore),
    )


async def observe_chain(
    conn: asyncpg.Connection,
    chain: ChainLookup,
    payment: PaymentConfig,
    scope: Scope,
    ignore: Collection[str],
    limits: ChainLimits,
) -> recon_chain.ChainObservation:
    """The windowed look at the chain (`core.recon.chain`) for the intents in scope, taken
    before the snapshot."""
    references = await recon_checks.reference_candidates(
        conn,
        limit=limits.reference_lookups,
        changed_since=None if scope.since is None else scope.since.horizon,
        window=scope.span,
    )
    return await recon_chain.observe(
        chain,
        payment,
        references=references,
        known=functools.partial(recon_checks.known_signatures, conn),
        ignore=ignore,
        limits=limits,
    )


async def read_scope(
    conn: asyncpg.Connection, pool: asyncpg.Pool, scope: Scope, horizon: datetime
) -> Read:
    """Take the snapshot and load what the scope covers, plus every finding open before."""
    snapshot, snapshot_time = await recon_sql.begin(conn)
    before = await recon_store.open_now(conn)
    await recon_sql.add_open(conn, before)
    if scope.mode is RunMode.FULL:
        flows, _ = await recon_sql.add_full(conn, pool)
        await recon_sql.add_stale(conn, scope.cutoff)
    elif scope.mode is RunMode.INCREMENTAL:
        assert scope.since is not None
        await recon_sql.add_changed(conn, scope.since.horizon)
        await recon_sql.add_stale(conn, scope.cutoff)
        flows = scope.base + await recon_sql.changed_flows(conn, scope.since)
    else:
        assert scope.span is not None
        await recon_sql.add_window(conn, *scope.span)
        await recon_sql.add_stale(conn, scope.cutoff, scope.span)
        flows = await recon_sql.window_flows(conn, *scope.span)
    await recon_sql.add_derived(conn)
    corrections, correction_credits = await recon_sql.corrections(conn, scope.span)
    # a window does not cover everything that changed: the next incremental run must not
    # start from it
    watermark = None if scope.span else Watermark(horizon, snapshot, snapshot_time)
    return Read(before, flows, corrections, correction_credits, watermark)
