"""SQL for the ledger: accounts, posting a ledger transaction, balances, totals."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from core.ledger.postings import Entry, LedgerKey, LedgerKind, Posting


async def post(
    conn: asyncpg.Connection,
    *,
    kind: LedgerKind,
    postings: list[Posting],
    created_by: str,
    description: str = "",
    intent_id: uuid.UUID | None = None,
    purchase_signature: str | None = None,
    once: LedgerKey | None = None,
    reverses_id: int | None = None,
) -> int:
    """Write one ledger transaction with its entries; returns its id.

    Must run inside the caller's database transaction: the zero-sum check runs at commit,
    and unique constraints (one purchase credit per signature and per intent, one reversal
    per transaction, one per `once` key) raise `asyncpg.UniqueViolationError`; its
    `constraint_name` tells which (`ONCE_CONSTRAINT` for the `once` key).

    One round trip: `POST_SQL` writes the transaction and its entries, creating a user's
    account on its first posting; a missing system account raises LookupError.
    """
    try:
        tx_id = await conn.fetchval(
            POST_SQL,
            kind.value,
            intent_id,
            purchase_signature,
            None if once is None else once.scope,
            None if once is None else once.principal,
            None if once is None else once.key,
            reverses_id,
            description,
            created_by,
            [p.account for p in postings],
            [p.amount for p in postings],
        )
    except asyncpg.exceptions.NoDataFoundError as exc:  # a system account the seed did not create
        raise LookupError(exc.message) from exc
    return int(tx_id)


# The unique index of a ledger transaction's `once` key (migration 0010).
ONCE_CONSTRAINT = "ledger_transactions_idempotency"

# The ledger transaction and its entries in one call (`payops_ledger_post`, migration 0013):
# entries in posting order, a user's account created on its first posting. The entry
# trigger runs per entry; the zero-sum check at commit.
POST_SQL = "SELECT payops_ledger_post($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"


async def balance(conn: asyncpg.Connection | asyncpg.Pool, user_id: str) -> int:
    value = await conn.fetchval("SELECT balance FROM user_balances WHERE user_id = $1", user_id)
    return int(value or 0)


async def lock_balance(conn: asyncpg.Connection, user_id: str) -> int:
    """The user's balance, row-locked until the end of the caller's transaction."""
    value = await conn.fetchval(
        "SELECT balance FROM user_balances WHERE user_id = $1 FOR UPDATE", user_id
    )
    return int(value or 0)


async def recent_entries(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: str, *, limit: int = 20
) -> list[Entry]:
    rows = await conn.fetch(
        """SELECT e.transaction_id, t.kind, e.amount, t.description, e.created_at
           FROM ledger_entries e
           JOIN accounts a ON a.id = e.account_id
           JOIN ledger_transactions t ON t.id = e.transaction_id
           WHERE a.name = $1
           ORDER BY e.id DESC LIMIT $2""",
        f"user:{user_id}",
        limit,
    )
    return [
        Entry(
            r["transaction_id"],
            LedgerKind(r["kind"]),
            r["amount"],
            r["description"],
            r["created_at"],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class LedgerHealth:
    """The ledger's invariants, read back from the database."""

    total: int  # sum of every entry: zero
    unbalanced_transactions: int
    balance_mismatches: int  # cached user balances that differ from their entries

    @property
    def ok(self) -> bool:
        return (
            self.total == 0 and self.unbalanced_transactions == 0 and self.balance_mismatches == 0
        )


async def health(conn: asyncpg.Connection | asyncpg.Pool) -> LedgerHealth:
    row = await conn.fetchrow(
        """SELECT
             (SELECT coalesce(sum(amount), 0) FROM ledger_entries) AS total,
             (SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries
                 GROUP BY transaction_id HAVING sum(amount) <> 0) u) AS unbalanced,
             (SELECT count(*) FROM accounts a
                 LEFT JOIN user_balances b ON b.account_id = a.id
                 LEFT JOIN (SELECT account_id, sum(amount) AS s FROM ledger_entries
                            GROUP BY account_id) e ON e.account_id = a.id
                 WHERE a.kind = 'user' AND coalesce(b.balance, 0) <> coalesce(e.s, 0)
             ) AS mismatches"""
    )
    assert row is not None
    return LedgerHealth(int(row["total"]), int(row["unbalanced"]), int(row["mismatches"]))
