"""Adjustments, the use case: requests, reversals, decisions that apply exactly once, expiry.

A decision is one database transaction: lock the adjustment row, load its decisions, judge
with the pure `core.adjustments.decide`, record the decision and — when it applies — post
the ledger transaction (idempotency key `adjustment:<id>`), mark the request APPLIED and
write the audit note. Two managers clicking at once, or one clicking twice, queue on the
row lock; the second sees the first's result. The unique ledger key, the unique
`applied_ledger_tx` and the status guard in migration 0002 hold even if this code did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core import audit, db, ledger
from core.adjustments import store
from core.adjustments.rules import (
    Adjustment,
    AdjustmentPolicy,
    AdjustmentRequest,
    AdjustmentStatus,
    Decision,
    DecisionKind,
    Outcome,
    Resolution,
    ReversibleTx,
    reversal_request,
    warnings,
)
from core.adjustments.rules import decide as judge
from core.audit import Actor
from core.errors import Conflict, InvalidInput, NotFound
from core.ledger import LedgerKey, adjustment_postings


@dataclass(frozen=True, slots=True)
class DecisionResult:
    adjustment: Adjustment  # as it stands after the decision
    decision: Decision
    resolution: Resolution
    approvers: tuple[str, ...]
    approvals_required: int
    ledger_tx: int | None  # the ledger transaction posted, when applied
    balance: int | None  # the user's balance after applying


def _facts(adj: Adjustment) -> dict[str, Any]:
    """The request as the audit log keeps it."""
    return {
        "user_id": adj.user_id,
        "credits": adj.credits,
        "kind": adj.kind.value,
        "reason": adj.reason,
        "tx_signatures": list(adj.refs.tx_signatures),
        "intent_ids": list(adj.refs.intent_ids),
        "ticket": adj.refs.ticket,
        "reverses_ledger_tx": adj.reverses_ledger_tx,
        "requester": adj.requester,
        "approvals_required": adj.approvals_required,
        "status": adj.status.value,
    }


async def create(conn: asyncpg.Connection, actor: Actor, request: AdjustmentRequest) -> Adjustment:
    """Store a request as PENDING_APPROVAL, requested by `actor`, with its audit record."""
    async with conn.transaction():
        try:
            adj = await store.insert(conn, actor, request)
        except asyncpg.UniqueViolationError as exc:
            # only the one-live-reversal-per-transaction index can clash here
            raise Conflict(
                f"ledger transaction {request.reverses_ledger_tx} already has a reversal "
                "request waiting or applied",
                code="reversal_pending",
            ) from exc
        await audit.record(
            conn, actor, action="adjustment.request", subject=_subject(adj), after=_facts(adj)
        )
    return adj


async def reversible_tx(conn: asyncpg.Connection | asyncpg.Pool, ledger_tx_id: int) -> ReversibleTx:
    """The facts of a ledger transaction as a reversal needs them, or `NotFound`."""
    found = await store.reversible_tx(conn, ledger_tx_id)
    if found is None:
        raise NotFound(f"no ledger transaction {ledger_tx_id}", code="ledger_tx_not_found")
    return found


async def reverse_request(
    conn: asyncpg.Connection,
    actor: Actor,
    ledger_tx_id: int,
    reason: str,
    *,
    policy: AdjustmentPolicy,
    now: datetime,
) -> Adjustment:
    """Request the reversal of a duplicate credit (`/pay-adjust reverse <ledger tx> <reason>`).

    Refuses a debit, a reversal, a negative adjustment, an already reversed transaction and
    one with a reversal request already waiting, each with its own error code.
    """
    original = await reversible_tx(conn, ledger_tx_id)
    request = reversal_request(original, reason=reason, policy=policy, now=now)
    return await create(conn, actor, request)


async def get(conn: asyncpg.Connection | asyncpg.Pool, adjustment_id: int) -> Adjustment | None:
    return await store.get(conn, adjustment_id)


async def decisions(conn: asyncpg.Connection | asyncpg.Pool, adjustment_id: int) -> list[Decision]:
    """The decisions taken on a request, oldest first."""
    return await store.decisions(conn, adjustment_id)


async def list_pending(
    conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 100
) -> list[Adjustment]:
    """Requests waiting for approval, oldest first (including any due to expire)."""
    return await store.list_pending(conn, limit=limit)


async def set_thread(
    conn: asyncpg.Connection | asyncpg.Pool, adjustment_id: int, channel: str, ts: str
) -> None:
    """Remember the Slack message that asks for approval, so the bot can update it later."""
    if not await db.set_slack_thread(conn, "adjustments", adjustment_id, channel, ts):
        raise NotFound(f"no adjustment {adjustment_id}", code="adjustment_not_found")


async def current_warnings(conn: asyncpg.Connection | asyncpg.Pool, adj: Adjustment) -> list[str]:
    """`warnings` against the user's balance right now, for the approval message (once the
    adjustment is applied, that balance holds it: the warning says what applying did)."""
    applied = adj.status is AdjustmentStatus.APPLIED
    return warnings(adj, await ledger.balance(conn, adj.user_id), applied=applied)


async def decide(
    conn: asyncpg.Connection,
    actor: Actor,
    adjustment_id: int,
    decision: DecisionKind,
    policy: AdjustmentPolicy,
    now: datetime,
    *,
    note: str | None = None,
) -> DecisionResult:
    """Record one manager's decision; apply or reject the request when it is settled.

    Everything happens in one database transaction, exactly once per request. A request
    found past its expiry is marked EXPIRED (and audited) before `adjustment_expired` is
    raised, so the refusal and the state agree.
    """
    if note is not None and len(note) > 500:
        raise InvalidInput("the note is at most 500 characters", code="invalid_note")
    refused: Conflict | None = None
    async with conn.transaction():
        adj = await store.get(conn, adjustment_id, lock=True)
        if adj is None:
            raise NotFound(f"no adjustment {adjustment_id}", code="adjustment_not_found")
        try:
            outcome = judge(
                adj, await decisions(conn, adjustment_id), actor.id, decision, policy, now, note
            )
        except Conflict as exc:
            if exc.code != "adjustment_expired":
                raise
            # commit the expiry, then refuse: raising here would roll it back
            await _close(conn, actor, adj, AdjustmentStatus.EXPIRED, now)
            refused = exc
        else:
            return await _settle(conn, actor, adj, outcome, now)
    assert refused is not None
    raise refused


async def _settle(
    conn: asyncpg.Connection, actor: Actor, adj: Adjustment, outcome: Outcome, now: datetime
) -> DecisionResult:
    decision = outcome.decision
    await store.insert_decision(conn, decision)
    await audit.record(
        conn,
        actor,
        action="adjustment.decision",
        subject=_subject(adj),
        after={"decision": decision.decision.value, "note": decision.note},
    )
    ledger_tx = balance = None
    if outcome.resolution is Resolution.APPLY:
        adj, ledger_tx, balance = await _apply(conn, actor, adj, outcome.approvers, now)
    elif outcome.resolution is Resolution.REJECT:
        adj = await _close(conn, actor, adj, AdjustmentStatus.REJECTED, now, note=decision.note)
    return DecisionResult(
        adjustment=adj,
        decision=decision,
        resolution=outcome.resolution,
        approvers=outcome.approvers,
        approvals_required=outcome.approvals_required,
        ledger_tx=ledger_tx,
        balance=balance,
    )


async def _apply(
    conn: asyncpg.Connection,
    actor: Actor,
    adj: Adjustment,
    approvers: tuple[str, ...],
    now: datetime,
) -> tuple[Adjustment, int, int]:
    before = await ledger.lock_balance(conn, adj.user_id)
    try:
        ledger_tx = await ledger.post(
            conn,
            kind=adj.ledger_kind,
            postings=adjustment_postings(adj.user_id, adj.credits),
            created_by=actor.id,
            description=f"adjustment {adj.id} ({adj.kind.value}): {adj.reason}",
            once=LedgerKey.adjustment(adj.id),
            reverses_id=adj.reverses_ledger_tx,
        )
    except asyncpg.UniqueViolationError as exc:
        # the row lock makes a second apply of this request impossible; what is left is a
        # reversal of a transaction that something else reversed meanwhile
        if exc.constraint_name == ledger.ONCE_CONSTRAINT:
            raise Conflict(
                f"adjustment {adj.id} already has a ledger transaction", code="already_applied"
            ) from exc
        if adj.reverses_ledger_tx is None:
            raise
        raise Conflict(
            f"ledger transaction {adj.reverses_ledger_tx} is already reversed",
            code="already_reversed",
        ) from exc
    applied = await store.mark_applied(conn, adj.id, ledger_tx, now)
    after = before + adj.credits
    await audit.record(
        conn,
        actor,
        action="adjustment.apply",
        subject=_subject(adj),
        before={"status": adj.status.value, "balance": before},
        after={
            **_facts(applied),
            "balance": after,
            "ledger_tx": ledger_tx,
            "approvers": list(approvers),
        },
    )
    return applied, ledger_tx, after


async def _close(
    conn: asyncpg.Connection,
    actor: Actor,
    adj: Adjustment,
    status: AdjustmentStatus,
    now: datetime,
    **extra: Any,
) -> Adjustment:
    """REJECTED or EXPIRED, with its audit record."""
    closed = await store.mark_closed(conn, adj.id, status, now)
    action = {AdjustmentStatus.REJECTED: "reject", AdjustmentStatus.EXPIRED: "expire"}[status]
    await audit.record(
        conn,
        actor,
        action=f"adjustment.{action}",
        subject=_subject(adj),
        before={"status": adj.status.value},
        after={**_facts(closed), **extra},
    )
    return closed


async def expire_due(
    conn: asyncpg.Connection, now: datetime, *, actor: Actor | None = None
) -> list[Adjustment]:
    """Mark every pending request past its expiry EXPIRED (audited); returns them.

    Requests being decided right now are skipped (their row is locked): the decision expires
    them itself if due, or the next run does.
    """
    actor = actor or Actor("scheduler", "scheduler")
    expired: list[Adjustment] = []
    async with conn.transaction():
        for adj in await store.lock_due(conn, now):
            expired.append(await _close(conn, actor, adj, AdjustmentStatus.EXPIRED, now))
    return expired


def _subject(adj: Adjustment) -> str:
    return f"adjustment:{adj.id}"
