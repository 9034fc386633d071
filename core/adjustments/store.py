"""SQL for adjustments and their decisions (tables of migration 0002): rows in, records out.

No policy here: `core.adjustments.service` decides, holds the transactions and writes the
audit records. Functions that change a row expect the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from core.adjustments.rules import (
    Adjustment,
    AdjustmentKind,
    AdjustmentRequest,
    AdjustmentStatus,
    Decision,
    DecisionKind,
    Refs,
    ReversibleTx,
)
from core.audit import Actor
from core.ledger import LedgerKind

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_COLUMNS = """id, user_id, credits, kind, tx_signatures, intent_ids, ticket, reason, requester,
    requester_source, status, approvals_required, created_at, expires_at, decided_at,
    reverses_ledger_tx, applied_ledger_tx, slack_channel, slack_thread_ts"""
_SELECT = f"SELECT {_COLUMNS} FROM adjustments"  # noqa: S608 (constants only)


def adjustment_from_row(row: Any) -> Adjustment:
    return Adjustment(
        id=row["id"],
        user_id=row["user_id"],
        credits=row["credits"],
        kind=AdjustmentKind(row["kind"]),
        refs=Refs(tuple(row["tx_signatures"]), tuple(row["intent_ids"]), row["ticket"]),
        reason=row["reason"],
        requester=row["requester"],
        requester_source=row["requester_source"],
        status=AdjustmentStatus(row["status"]),
        approvals_required=row["approvals_required"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        decided_at=row["decided_at"],
        reverses_ledger_tx=row["reverses_ledger_tx"],
        applied_ledger_tx=row["applied_ledger_tx"],
        slack_channel=row["slack_channel"],
        slack_thread_ts=row["slack_thread_ts"],
    )


def _decision_from_row(row: Any) -> Decision:
    return Decision(
        adjustment_id=row["adjustment_id"],
        approver=row["approver"],
        decision=DecisionKind(row["decision"]),
        note=row["note"],
        created_at=row["created_at"],
    )


async def insert(conn: Conn, actor: Actor, request: AdjustmentRequest) -> Adjustment:
    """A new PENDING_APPROVAL row. Raises `asyncpg.UniqueViolationError` when the
    transaction it reverses already has a live reversal request."""
    row = await conn.fetchrow(
        f"""INSERT INTO adjustments (user_id, credits, kind, tx_signatures, intent_ids,
               ticket, reason, requester, requester_source, approvals_required,
               created_at, expires_at, reverses_ledger_tx)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
        request.user_id,
        request.credits,
        request.kind.value,
        list(request.refs.tx_signatures),
        list(request.refs.intent_ids),
        request.refs.ticket,
        request.reason,
        actor.id,
        actor.source,
        request.approvals_required,
        request.created_at,
        request.expires_at,
        request.reverses_ledger_tx,
    )
    return adjustment_from_row(row)


async def reversible_tx(conn: Conn, ledger_tx_id: int) -> ReversibleTx | None:
    """A ledger transaction's facts as a reversal needs them, or None."""
    row = await conn.fetchrow(
        """SELECT t.id, t.kind, t.intent_id, t.purchase_signature, a.user_id, e.amount,
                  (SELECT r.id FROM ledger_transactions r WHERE r.reverses_id = t.id) AS reversed_by
           FROM ledger_transactions t
           JOIN ledger_entries e ON e.transaction_id = t.id
           JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
           WHERE t.id = $1""",
        ledger_tx_id,
    )
    if row is None:
        return None
    return ReversibleTx(
        id=row["id"],
        kind=LedgerKind(row["kind"]),
        user_id=row["user_id"],
        user_amount=row["amount"],
        reversed_by=row["reversed_by"],
        intent_id=None if row["intent_id"] is None else str(row["intent_id"]),
        purchase_signature=row["purchase_signature"],
    )


async def get(conn: Conn, adjustment_id: int, *, lock: bool = False) -> Adjustment | None:
    """One adjustment; with `lock`, its row locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        _SELECT + " WHERE id = $1" + (" FOR UPDATE" if lock else ""), adjustment_id
    )
    return None if row is None else adjustment_from_row(row)


async def decisions(conn: Conn, adjustment_id: int) -> list[Decision]:
    """The decisions taken on a request, oldest first."""
    rows = await conn.fetch(
        """SELECT adjustment_id, approver, decision, note, created_at
           FROM adjustment_decisions WHERE adjustment_id = $1 ORDER BY id""",
        adjustment_id,
    )
    return [_decision_from_row(r) for r in rows]


async def list_pending(conn: Conn, *, limit: int = 100) -> list[Adjustment]:
    """Requests waiting for approval, oldest first (including any due to expire)."""
    rows = await conn.fetch(
        _SELECT + " WHERE status = 'PENDING_APPROVAL' ORDER BY id LIMIT $1", limit
    )
    return [adjustment_from_row(r) for r in rows]


async def lock_due(conn: asyncpg.Connection, now: datetime) -> list[Adjustment]:
    """Pending requests past their expiry, row-locked; those locked by someone else are
    skipped."""
    rows = await conn.fetch(
        _SELECT
        + """ WHERE status = 'PENDING_APPROVAL' AND expires_at <= $1
              ORDER BY id FOR UPDATE SKIP LOCKED""",
        now,
    )
    return [adjustment_from_row(r) for r in rows]


async def insert_decision(conn: asyncpg.Connection, decision: Decision) -> None:
    await conn.execute(
        """INSERT INTO adjustment_decisions (adjustment_id, approver, decision, note, created_at)
           VALUES ($1, $2, $3, $4, $5)""",
        decision.adjustment_id,
        decision.approver,
        decision.decision.value,
        decision.note,
        decision.created_at,
    )


async def mark_applied(
    conn: asyncpg.Connection, adjustment_id: int, ledger_tx: int, now: datetime
) -> Adjustment:
    row = await conn.fetchrow(
        f"""UPDATE adjustments SET status = 'APPLIED', applied_ledger_tx = $2, decided_at = $3
           WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
        adjustment_id,
        ledger_tx,
        now,
    )
    return adjustment_from_row(row)


async def mark_closed(
    conn: asyncpg.Connection, adjustment_id: int, status: AdjustmentStatus, now: datetime
) -> Adjustment:
    """REJECTED or EXPIRED."""
    row = await conn.fetchrow(
        f"""UPDATE adjustments SET status = $2, decided_at = $3
           WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
        adjustment_id,
        status.value,
        now,
    )
    return adjustment_from_row(row)
