"""What the database says after an end-to-end request: one intent's status, its ledger
transactions, its user's balance and attempts, and the ledger's invariants."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from core import ledger
from tests.e2e.harness import Service

if TYPE_CHECKING:
    from tests.conftest import DatabaseFactory


@dataclass(frozen=True)
class Facts:
    """One intent's state and its user's money, read back after a verify."""

    status: str
    reject_code: str | None
    tx_signature: str | None
    received_amount: int | None
    purchases: int  # ledger transactions crediting this intent
    balance: int  # the user's cached balance
    entries_sum: int  # the sum of the user's ledger entries
    attempts: list[tuple[str, str | None]]  # (outcome, code), oldest first


async def facts(pool: asyncpg.Pool, intent_id: str | uuid.UUID) -> Facts:
    key = uuid.UUID(str(intent_id))
    intent = await pool.fetchrow(
        """SELECT user_id, status, reject_code, tx_signature, received_amount
           FROM purchase_intents WHERE id = $1""",
        key,
    )
    assert intent is not None, f"no intent {intent_id} in the database"
    user = intent["user_id"]
    purchases = await pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE intent_id = $1 AND kind = 'purchase'", key
    )
    entries_sum = await pool.fetchval(
        """SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e
           JOIN accounts a ON a.id = e.account_id WHERE a.user_id = $1""",
        user,
    )
    attempts = await pool.fetch(
        "SELECT outcome, code FROM verification_attempts WHERE intent_id = $1 ORDER BY id", key
    )
    received = intent["received_amount"]
    return Facts(
        status=intent["status"],
        reject_code=intent["reject_code"],
        tx_signature=intent["tx_signature"],
        received_amount=None if received is None else int(received),
        purchases=int(purchases),
        balance=await ledger.balance(pool, user),
        entries_sum=int(entries_sum),
        attempts=[(r["outcome"], r["code"]) for r in attempts],
    )


async def assert_ledger_healthy(pool: asyncpg.Pool) -> None:
    health = await ledger.health(pool)
    assert health.ok, health


async def assert_credited_once(
    service: Service, intent: Mapping[str, Any], signature: str
) -> Facts:
    found = await facts(service.pool, intent["id"])
    assert found.status == "CONFIRMED"
    assert found.tx_signature == signature
    assert found.purchases == 1
    assert found.balance == found.entries_sum == intent["credits"]
    await assert_ledger_healthy(service.pool)
    return found


async def assert_not_credited(
    service: Service, intent: Mapping[str, Any], *, status: str = "PENDING"
) -> Facts:
    found = await facts(service.pool, intent["id"])
    assert found.status == status
    assert found.tx_signature is None
    assert found.purchases == 0
    assert found.balance == found.entries_sum == 0
    await assert_ledger_healthy(service.pool)
    return found


@contextlib.asynccontextmanager
async def session_database(factory: DatabaseFactory) -> AsyncIterator[str]:
    """A fresh migrated database (from the suite's template) until the block exits."""
    name, dsn = await factory.take()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(factory.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def new_user(prefix: str) -> str:
    """A user of one test only, so tests sharing a service cannot see each other's money."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
