"""Debits: other internal services spend a user's credits, never below zero, once per key."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from core import audit, webhooks
from core.audit import Actor
from core.errors import Conflict, InvalidInput, Unprocessable
from core.ledger import store as ledger_db
from core.ledger.postings import LedgerKey, LedgerKind, debit_postings

MAX_DEBIT = 10**12


@dataclass(frozen=True, slots=True)
class Debit:
    transaction_id: int
    user_id: str
    credits: int
    balance: int


def check_debit(user_id: str, credits: int, reason: str) -> None:
    if not 1 <= len(user_id) <= 200:
        raise InvalidInput("user_id must be 1 to 200 characters", code="invalid_user_id")
    if isinstance(credits, bool) or not isinstance(credits, int) or not 1 <= credits <= MAX_DEBIT:
        raise InvalidInput(
            f"credits must be an integer from 1 to {MAX_DEBIT}", code="invalid_credits"
        )
    if len(reason) > 500:
        raise InvalidInput("reason is at most 500 characters", code="invalid_reason")


async def debit(
    conn: asyncpg.Connection, actor: Actor, *, user_id: str, credits: int, reason: str, key: str
) -> Debit:
    """Spend `credits` of `user_id` inside the caller's transaction.

    The balance row is locked first, so two concurrent debits cannot both pass the check;
    a trigger in the database refuses a debit below zero even if this check were skipped.
    """
    check_debit(user_id, credits, reason)
    async with conn.transaction():
        balance = await ledger_db.lock_balance(conn, user_id)
        if balance < credits:
            raise Unprocessable(
                f"the balance ({balance}) is smaller than the debit ({credits})",
                code="insufficient_credits",
            )
        try:
            tx_id = await ledger_db.post(
                conn,
                kind=LedgerKind.DEBIT,
                postings=debit_postings(user_id, credits),
                created_by=actor.id,
                description=reason,
                once=LedgerKey.debit(actor.id, key),
            )
        except asyncpg.UniqueViolationError as exc:
            # The API claims (debit, service, key) in idempotency_keys first, so only a caller
            # that skipped it (or an expired claim) lands here: refuse, never a 500.
            if exc.constraint_name != ledger_db.ONCE_CONSTRAINT:
                raise
            raise Conflict(
                f"a debit with Idempotency-Key {key!r} was already made by {actor.id}",
                code="idempotency_key_used",
            ) from exc
        await webhooks.enqueue(
            conn,
            "credits.debited",
            f"user:{user_id}",
            {
                "user_id": user_id,
                "credits": credits,
                "balance": balance - credits,
                "ledger_transaction_id": tx_id,
                "reason": reason,
            },
        )
        await audit.record(
            conn,
            actor,
            action="ledger.debit",
            subject=f"user:{user_id}",
            before={"balance": balance},
            after={
                "balance": balance - credits,
                "credits": credits,
                "transaction_id": tx_id,
                "reason": reason,
            },
        )
    return Debit(tx_id, user_id, credits, balance - credits)
