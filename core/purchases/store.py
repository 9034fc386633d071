"""SQL for purchase intents and verification attempts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from core.audit import Actor
from core.purchases.intents import Intent, IntentStatus

_COLUMNS = """id, user_id, credits, amount, mint, token_program, recipient,
    recipient_token_account, reference, memo, wallet, status, tx_signature, received_amount,
    reject_code, created_at, expires_at, confirmed_at"""

_SELECT = f"SELECT {_COLUMNS} FROM purchase_intents WHERE id = $1"  # noqa: S608 (constants only)
_SELECT_FOR_UPDATE = _SELECT + " FOR UPDATE"
# The intent, and the intent its would-be signature already paid for (the verify pre-check).
_SELECT_FOR_VERIFY = f"""SELECT {_COLUMNS},
        (SELECT intent_id FROM ledger_transactions WHERE purchase_signature = $2)
            AS signature_owner
    FROM purchase_intents WHERE id = $1"""  # noqa: S608 (constants only)


def intent_from_row(row: Any) -> Intent:
    return Intent(
        id=row["id"],
        user_id=row["user_id"],
        credits=row["credits"],
        amount=int(row["amount"]),
        mint=row["mint"],
        token_program=row["token_program"],
        recipient=row["recipient"],
        recipient_token_account=row["recipient_token_account"],
        reference=row["reference"],
        memo=row["memo"],
        wallet=row["wallet"],
        status=IntentStatus(row["status"]),
        tx_signature=row["tx_signature"],
        received_amount=None if row["received_amount"] is None else int(row["received_amount"]),
        reject_code=row["reject_code"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        confirmed_at=row["confirmed_at"],
    )


async def insert(conn: asyncpg.Connection, intent: Intent) -> None:
    await conn.execute(
        """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
               recipient, recipient_token_account, reference, memo, wallet, status,
               created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        intent.id,
        intent.user_id,
        intent.credits,
        intent.amount,
        intent.mint,
        intent.token_program,
        intent.recipient,
        intent.recipient_token_account,
        intent.reference,
        intent.memo,
        intent.wallet,
        intent.status.value,
        intent.created_at,
        intent.expires_at,
    )


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID, *, for_update: bool = False
) -> Intent | None:
    row = await conn.fetchrow(_SELECT_FOR_UPDATE if for_update else _SELECT, intent_id)
    return None if row is None else intent_from_row(row)


async def get_for_verify(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID, signature: str
) -> tuple[Intent | None, uuid.UUID | None]:
    """The intent, and the intent `signature` already credited (if any), in one query."""
    row = await conn.fetchrow(_SELECT_FOR_VERIFY, intent_id, signature)
    if row is None:
        return None, None
    return intent_from_row(row), row["signature_owner"]


async def intent_of_signature(
    conn: asyncpg.Connection | asyncpg.Pool, signature: str
) -> uuid.UUID | None:
    """The intent a transaction signature already credited, if any."""
    value = await conn.fetchval(
        "SELECT intent_id FROM ledger_transactions WHERE purchase_signature = $1", signature
    )
    return value if isinstance(value, uuid.UUID) else None


async def mark_rejected(conn: asyncpg.Connection, intent: Intent, *, code: str) -> str | None:
    """REJECTED if still PENDING or EXPIRED: the status it had, or None when nothing changed
    (confirmed or rejected meanwhile)."""
    before = await conn.fetchval(
        """UPDATE purchase_intents p
           SET status = 'REJECTED', reject_code = $2, updated_at = now()
           FROM (SELECT id, status FROM purchase_intents WHERE id = $1 FOR UPDATE) old
           WHERE p.id = old.id AND old.status IN ('PENDING', 'EXPIRED')
           RETURNING old.status""",
        intent.id,
        code,
    )
    return None if before is None else str(before)


async def record_attempt(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    intent: Intent,
    signature: str,
    source: str,
    outcome: str,
    code: str | None,
    detail: str | None,
    request_id: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO verification_attempts
               (intent_id, user_id, signature, source, outcome, code, detail, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        intent.id,
        intent.user_id,
        signature,
        source,
        outcome,
        code,
        detail,
        request_id,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """A verification attempt to record (see `record_attempt`)."""

    signature: str
    source: str
    outcome: str
    code: str | None
    detail: str | None
    request_id: str | None


# One statement: the intent CONFIRMED, its attempt, its audit record (the row
# `audit.record` writes) and the user's balance after the credit posted earlier in the
# same transaction.
CONFIRM_SQL = """
    WITH confirmed AS (
        UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = $2,
            received_amount = $3, confirmed_at = now(), updated_at = now()
        WHERE id = $1 RETURNING confirmed_at
    ), attempt AS (
        INSERT INTO verification_attempts
            (intent_id, user_id, signature, source, outcome, code, detail, request_id)
        VALUES ($1, $4, $2, $5, $6, $7, $8, $9)
    ), audit AS (
        INSERT INTO audit_log (actor, source, action, subject, before, after, request_id)
        VALUES ($10, $11, 'intent.confirm', 'intent:' || $1::text, $12, $13, $9)
    )
    SELECT (SELECT confirmed_at FROM confirmed) AS confirmed_at,
           coalesce((SELECT balance FROM user_balances WHERE user_id = $4), 0) AS balance"""


async def confirm(
    conn: asyncpg.Connection,
    intent: Intent,
    *,
    received: int,
    attempt: Attempt,
    actor: Actor,
    facts: dict[str, Any],
) -> tuple[Intent, int]:
    """Mark the (locked) intent CONFIRMED by `attempt.signature`, record the attempt and the
    `intent.confirm` audit record with `facts`, in the caller's transaction, in one round
    trip. Returns the intent as confirmed and the user's balance."""
    row = await conn.fetchrow(
        CONFIRM_SQL,
        intent.id,
        attempt.signature,
        received,
        intent.user_id,
        attempt.source,
        attempt.outcome,
        attempt.code,
        attempt.detail,
        attempt.request_id,
        actor.id,
        actor.source,
        {"status": intent.status.value},
        facts,
    )
    assert row is not None
    confirmed = replace(
        intent,
        status=IntentStatus.CONFIRMED,
        tx_signature=attempt.signature,
        received_amount=received,
        confirmed_at=row["confirmed_at"],
    )
    return confirmed, int(row["balance"])


_ATTEMPT_AND_BALANCE = """
    WITH attempt AS (
        INSERT INTO verification_attempts
            (intent_id, user_id, signature, source, outcome, code, detail, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    )
    SELECT coalesce((SELECT balance FROM user_balances WHERE user_id = $2), 0)"""


async def record_attempt_and_balance(
    conn: asyncpg.Connection | asyncpg.Pool, intent: Intent, attempt: Attempt
) -> int:
    """Record `attempt` and read the intent's user's balance, in one round trip."""
    value = await conn.fetchval(
        _ATTEMPT_AND_BALANCE,
        intent.id,
        intent.user_id,
        attempt.signature,
        attempt.source,
        attempt.outcome,
        attempt.code,
        attempt.detail,
        attempt.request_id,
    )
    return int(value)


async def bound_inflows(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> list[str]:
    """Signatures of the inflows the treasury watcher recorded bound to the intent, oldest
    first."""
    rows = await conn.fetch(
        """SELECT signature FROM treasury_flows
           WHERE intent_id = $1 AND amount > 0 ORDER BY slot, signature""",
        intent_id,
    )
    return [r["signature"] for r in rows]


async def refused_signatures(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID
) -> dict[str, tuple[str, str]]:
    """Signatures refused for this intent before (by anyone): signature -> (outcome, code),
    the first refusal of each."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (signature) signature, outcome, coalesce(code, outcome) AS code
           FROM verification_attempts
           WHERE intent_id = $1 AND outcome IN ('rejected', 'conflict')
           ORDER BY signature, id""",
        intent_id,
    )
    return {r["signature"]: (r["outcome"], r["code"]) for r in rows}


# A duplicate's attempt (the intent was already credited by this signature) and the balance,
# committed with `synchronous_commit = off` for this transaction only (`set_config(..., true)`
# lasts until the statement's implicit transaction ends, so the pooled connection keeps the
# server's setting). The commit does not wait for its WAL flush: a crash of the database
# within a few hundred milliseconds could lose the last duplicates' attempt rows, never a
# credit, a state change or an audit record (none is written here), and never leaves the
# database inconsistent (asynchronous commit loses whole transactions, in order).
_DUPLICATE_AND_BALANCE = """
    WITH attempt AS (
        INSERT INTO verification_attempts
            (intent_id, user_id, signature, source, outcome, code, detail, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    )
    SELECT coalesce((SELECT balance FROM user_balances WHERE user_id = $2), 0),
           set_config('synchronous_commit', 'off', true)"""


async def record_duplicate_and_balance(
    conn: asyncpg.Connection | asyncpg.Pool, intent: Intent, attempt: Attempt
) -> int:
    """`record_attempt_and_balance` for a duplicate outside any transaction, committed
    without waiting for the WAL flush (see `_DUPLICATE_AND_BALANCE`)."""
    row = await conn.fetchrow(
        _DUPLICATE_AND_BALANCE,
        intent.id,
        intent.user_id,
        attempt.signature,
        attempt.source,
        attempt.outcome,
        attempt.code,
        attempt.detail,
        attempt.request_id,
    )
    assert row is not None
    return int(row[0])
