"""SQL for purchase intents and verification attempts."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from core.intents import Intent, IntentStatus

_COLUMNS = """id, user_id, credits, amount, mint, token_program, recipient,
    recipient_token_account, reference, memo, wallet, status, tx_signature, received_amount,
    reject_code, created_at, expires_at, confirmed_at"""

_SELECT = f"SELECT {_COLUMNS} FROM purchase_intents WHERE id = $1"  # noqa: S608 (constants only)
_SELECT_FOR_UPDATE = _SELECT + " FOR UPDATE"


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


async def intent_of_signature(
    conn: asyncpg.Connection | asyncpg.Pool, signature: str
) -> uuid.UUID | None:
    """The intent a transaction signature already credited, if any."""
    value = await conn.fetchval(
        "SELECT intent_id FROM ledger_transactions WHERE purchase_signature = $1", signature
    )
    return value if isinstance(value, uuid.UUID) else None


async def mark_confirmed(
    conn: asyncpg.Connection, intent: Intent, *, signature: str, received: int
) -> None:
    await conn.execute(
        """UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = $2,
               received_amount = $3, confirmed_at = now(), updated_at = now()
           WHERE id = $1""",
        intent.id,
        signature,
        received,
    )


async def mark_rejected(conn: asyncpg.Connection, intent: Intent, *, code: str) -> None:
    await conn.execute(
        """UPDATE purchase_intents SET status = 'REJECTED', reject_code = $2, updated_at = now()
           WHERE id = $1 AND status IN ('PENDING', 'EXPIRED')""",
        intent.id,
        code,
    )


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
