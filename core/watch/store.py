"""SQL of the treasury watcher: its cursor and the flows it recorded (no policy here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.watch.rules import Flow


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far the watcher has read one account's history."""

    account: str
    signature: str | None  # newest recorded; None: nothing since watching began
    slot: int | None
    start_balance: int
    start_slot: int
    started_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedFlow:
    """A flow as stored, with the intent it was bound to and whether it is settled."""

    signature: str
    slot: int
    block_time: datetime | None
    amount: int
    payer: str
    intent_id: uuid.UUID | None
    settled: bool
    outcome: str | None = None


def _cursor(row: Any) -> Cursor:
    return Cursor(
        account=row["account"],
        signature=row["signature"],
        slot=row["slot"],
        start_balance=int(row["start_balance"]),
        start_slot=row["start_slot"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
    )


def _flow(row: Any) -> RecordedFlow:
    return RecordedFlow(
        signature=row["signature"],
        slot=row["slot"],
        block_time=row["block_time"],
        amount=int(row["amount"]),
        payer=row["payer"],
        intent_id=row["intent_id"],
        settled=row["settled_at"] is not None,
        outcome=row["outcome"],
    )


async def cursor(db: asyncpg.Connection | asyncpg.Pool, account: str) -> Cursor | None:
    row = await db.fetchrow("SELECT * FROM treasury_cursor WHERE account = $1", account)
    return None if row is None else _cursor(row)


async def start(
    conn: asyncpg.Connection, account: str, *, balance: int, slot: int, newest: str | None
) -> Cursor:
    """Begin watching `account`: its balance now, and its newest signature as the cursor.
    A second start (another replica got there first) keeps the first."""
    await conn.execute(
        """INSERT INTO treasury_cursor (account, signature, slot, start_balance, start_slot)
           VALUES ($1, $2, $3, $4, $3) ON CONFLICT (account) DO NOTHING""",
        account,
        newest,
        slot,
        balance,
    )
    started = await cursor(conn, account)
    assert started is not None  # inserted above, or already there
    return started


async def bound_intents(
    conn: asyncpg.Connection, keys: Sequence[str], ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, str]]:
    """(id, reference) of the intents whose reference is among `keys` or whose id is in `ids`,
    oldest first."""
    rows = await conn.fetch(
        """SELECT id, reference FROM purchase_intents
           WHERE reference = ANY($1::text[]) OR id = ANY($2::uuid[])
           ORDER BY created_at, id""",
        list(keys),
        list(ids),
    )
    return [(r["id"], r["reference"]) for r in rows]


async def record(
    conn: asyncpg.Connection,
    account: str,
    flow: Flow,
    *,
    intent_id: uuid.UUID | None,
    refs: Sequence[str],
) -> bool:
    """Record `flow` (once: a re-read records nothing). True if this call recorded it."""
    status = await conn.execute(
        """INSERT INTO treasury_flows
               (signature, account, slot, block_time, amount, payer, refs, memos, intent_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (signature) DO NOTHING""",
        flow.signature,
        account,
        flow.slot,
        flow.block_time,
        flow.amount,
        flow.payer,
        list(refs),
        [m[:500] for m in flow.memos],
        intent_id,
    )
    return bool(status.endswith(" 1"))


async def advance(conn: asyncpg.Connection, account: str, signature: str, slot: int) -> None:
    """Move the cursor to `signature` (call in the transaction that recorded up to it)."""
    await conn.execute(
        """UPDATE treasury_cursor SET signature = $2, slot = greatest(coalesce(slot, $3), $3),
               updated_at = now()
           WHERE account = $1""",
        account,
        signature,
        slot,
    )


async def touch(db: asyncpg.Connection | asyncpg.Pool, account: str) -> None:
    """The watcher read the account and found nothing new: it is up to date as of now."""
    await db.execute("UPDATE treasury_cursor SET updated_at = now() WHERE account = $1", account)


async def unsettled(
    db: asyncpg.Connection | asyncpg.Pool, account: str, limit: int
) -> list[RecordedFlow]:
    """Inflows bound to an intent that the watcher has not yet taken to a final outcome."""
    rows = await db.fetch(
        """SELECT * FROM treasury_flows
           WHERE account = $1 AND intent_id IS NOT NULL AND settled_at IS NULL AND amount > 0
           ORDER BY slot, signature LIMIT $2""",
        account,
        limit,
    )
    return [_flow(r) for r in rows]


async def settle(db: asyncpg.Connection | asyncpg.Pool, signature: str, outcome: str) -> None:
    """The watcher's final outcome for a bound inflow (once: a settled flow stays settled)."""
    await db.execute(
        """UPDATE treasury_flows SET settled_at = now(), outcome = $2
           WHERE signature = $1 AND settled_at IS NULL""",
        signature,
        outcome,
    )


async def partial_totals(
    db: asyncpg.Connection | asyncpg.Pool, intent_ids: list[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """What each intent's valid but short payments settled so far brought in (intents with
    none are left out)."""
    rows = await db.fetch(
        """SELECT intent_id, sum(amount) AS paid FROM treasury_flows
           WHERE intent_id = ANY($1::uuid[]) AND outcome = 'partial'
           GROUP BY intent_id""",
        intent_ids,
    )
    return {r["intent_id"]: int(r["paid"]) for r in rows}


async def flows_of_intent(
    db: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID
) -> list[RecordedFlow]:
    rows = await db.fetch(
        "SELECT * FROM treasury_flows WHERE intent_id = $1 ORDER BY slot, signature", intent_id
    )
    return [_flow(r) for r in rows]


async def recorded_total(db: asyncpg.Connection | asyncpg.Pool, account: str) -> int:
    """The sum of every flow recorded for `account` (inflows minus outflows)."""
    value = await db.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM treasury_flows WHERE account = $1", account
    )
    return int(value)


async def books(db: asyncpg.Connection | asyncpg.Pool, account: str) -> tuple[Cursor, int] | None:
    """The cursor of `account` and the sum of its recorded flows, read in one statement so the
    two agree (the watcher moves the cursor in the transaction that records the flows), or
    None when the account is not watched."""
    row = await db.fetchrow(
        """SELECT c.*, (SELECT coalesce(sum(f.amount), 0) FROM treasury_flows f
                        WHERE f.account = c.account) AS recorded
           FROM treasury_cursor c WHERE c.account = $1""",
        account,
    )
    return None if row is None else (_cursor(row), int(row["recorded"]))


@dataclass(frozen=True, slots=True)
class Sighting:
    """A payment to an intent seen at `confirmed`, not final yet."""

    intent_id: uuid.UUID
    signature: str
    slot: int
    amount: int
    seen_at: datetime


async def sighted(db: asyncpg.Connection | asyncpg.Pool, signatures: Sequence[str]) -> set[str]:
    """Which of `signatures` were already seen."""
    rows = await db.fetch(
        "SELECT DISTINCT signature FROM treasury_sightings WHERE signature = ANY($1::text[])",
        list(signatures),
    )
    return {r["signature"] for r in rows}


async def sight(
    conn: asyncpg.Connection, intent_id: uuid.UUID, signature: str, slot: int, amount: int
) -> bool:
    """Record a sighting and tell the intent's event streams (once per intent and signature)."""
    status = await conn.execute(
        """INSERT INTO treasury_sightings (intent_id, signature, slot, amount)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        intent_id,
        signature,
        slot,
        amount,
    )
    if not status.endswith(" 1"):
        return False
    await conn.execute("SELECT pg_notify('payops_intents', $1)", str(intent_id))
    return True


async def sightings_of(
    db: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID
) -> list[Sighting]:
    """The payments to `intent_id` seen before they were final, oldest first."""
    rows = await db.fetch(
        "SELECT * FROM treasury_sightings WHERE intent_id = $1 ORDER BY slot, signature",
        intent_id,
    )
    return [
        Sighting(r["intent_id"], r["signature"], r["slot"], int(r["amount"]), r["seen_at"])
        for r in rows
    ]
