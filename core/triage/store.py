"""SQL for triage: the evidence about one subject, and a window's verification picture.

Every lookup starts from an indexed predicate (intent id, `purchase_intents (user_id,
created_at)`, `(wallet)`, the unique tx signature columns, `verification_attempts (intent_id,
created_at)` and `(created_at)`, `ledger_entries (account_id, id)`, the unique
`ledger_transactions.intent_id` / `purchase_signature` / `reverses_id`), and is bounded by
limits, so triage stays fast with millions of intents. Each read runs in one repeatable-read,
read-only transaction: the evidence is one snapshot, never half of a credit.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from core.ledger import LedgerKind
from core.purchases import IntentStatus
from core.triage.evidence import (
    AttemptFacts,
    BalanceFacts,
    Evidence,
    IntentFacts,
    LedgerFacts,
    Subject,
    SubjectKind,
    unique,
)
from core.triage.window import (
    FAILED_OUTCOMES,
    AttemptSummaryRow,
    FailingUsers,
    Window,
    WindowSummary,
    summarise,
)

ATTEMPTS_PER_INTENT = 20  # the latest ones; `confirmed` attempts are always read too
MAX_USERS = 20
MAX_SIGNATURES = 100
TOP_FAILING_USERS = 5

_INTENT_COLUMNS = """id, user_id, credits, amount, wallet, status, tx_signature, reject_code,
    created_at, expires_at, confirmed_at"""
_INTENTS = f"SELECT {_INTENT_COLUMNS} FROM purchase_intents WHERE "  # noqa: S608 (constants)
_INTENTS_BY: dict[SubjectKind, str] = {
    SubjectKind.INTENT: _INTENTS + "id = $1::uuid LIMIT $2",
    SubjectKind.USER: _INTENTS + "user_id = $1 ORDER BY created_at DESC LIMIT $2",
    SubjectKind.WALLET: _INTENTS + "wallet = $1 ORDER BY created_at DESC LIMIT $2",
    # A signature may sit on the intent it confirmed, on attempts for any intent (someone
    # presenting another's payment), or on a purchase credit.
    SubjectKind.SIGNATURE: _INTENTS  # noqa: S608 (constants only)
    + """id IN (
            SELECT id FROM purchase_intents WHERE tx_signature = $1
            UNION SELECT intent_id FROM verification_attempts WHERE signature = $1
            UNION SELECT intent_id FROM ledger_transactions
                  WHERE purchase_signature = $1 AND intent_id IS NOT NULL)
        ORDER BY created_at DESC LIMIT $2""",
}

_ATTEMPT_COLUMNS = """id, intent_id, user_id, signature, request_id, source, outcome, code,
    detail, created_at"""
_ATTEMPTS = f"""
    SELECT a.* FROM unnest($1::uuid[]) AS i(id) CROSS JOIN LATERAL (
        SELECT {_ATTEMPT_COLUMNS} FROM verification_attempts
        WHERE intent_id = i.id ORDER BY created_at DESC LIMIT $2) a
    UNION
    SELECT {_ATTEMPT_COLUMNS} FROM verification_attempts
    WHERE intent_id = ANY($1::uuid[]) AND outcome = 'confirmed'
    ORDER BY created_at, id"""  # noqa: S608 (constants only)

# Purchases of the intents and signatures, the users' latest ledger transactions, and any
# reversal of those; one row per (transaction, user account) with the user's side.
_LEDGER = """
    WITH picked AS (
        SELECT id FROM ledger_transactions WHERE intent_id = ANY($1::uuid[])
        UNION SELECT id FROM ledger_transactions WHERE purchase_signature = ANY($2::text[])
        UNION SELECT r.transaction_id FROM accounts a CROSS JOIN LATERAL (
                SELECT e.transaction_id FROM ledger_entries e WHERE e.account_id = a.id
                ORDER BY e.id DESC LIMIT $4) r
              WHERE a.user_id = ANY($3::text[])
    ), chosen AS (
        SELECT id FROM picked
        UNION SELECT t.id FROM ledger_transactions t WHERE t.reverses_id IN (SELECT id FROM picked)
    )
    SELECT t.id, t.kind, a.user_id, sum(e.amount) AS amount, t.intent_id,
           t.purchase_signature, t.reverses_id, t.created_at
    FROM chosen c
    JOIN ledger_transactions t ON t.id = c.id
    JOIN ledger_entries e ON e.transaction_id = t.id
    JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
    GROUP BY t.id, a.user_id
    ORDER BY t.id, a.user_id"""

_BALANCES = """
    SELECT a.user_id, coalesce(b.balance, 0) AS cached,
           coalesce((SELECT sum(e.amount) FROM ledger_entries e WHERE e.account_id = a.id), 0)
               AS entries_sum
    FROM accounts a LEFT JOIN user_balances b ON b.account_id = a.id
    WHERE a.kind = 'user' AND a.user_id = ANY($1::text[])
    ORDER BY a.user_id"""


@asynccontextmanager
async def _snapshot(db: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """One read-only, repeatable-read transaction: every query sees the same moment."""
    if isinstance(db, asyncpg.Pool):
        async with (
            db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn
    else:
        async with db.transaction(isolation="repeatable_read", readonly=True):
            yield db


async def gather(
    db: asyncpg.Pool | asyncpg.Connection, subject: Subject, *, limit: int = 50
) -> Evidence:
    """The evidence about `subject`: its intents (the latest `limit`), their attempts, the
    purchase credits of those intents and signatures (and the intents those credits name),
    the users' latest ledger transactions and reversals, and each user's cached balance
    beside the sum of their entries."""
    async with _snapshot(db) as conn:
        key: object = (
            uuid.UUID(subject.value) if subject.kind is SubjectKind.INTENT else subject.value
        )
        rows = await conn.fetch(_INTENTS_BY[subject.kind], key, limit + 1)
        truncated = len(rows) > limit
        intents = [_intent(r) for r in rows[:limit]]
        attempts = await _attempts(conn, [i.id for i in intents])
        users = unique(
            ([subject.value] if subject.kind is SubjectKind.USER else [])
            + [i.user_id for i in intents]
            + [a.user_id for a in attempts]
        )
        signatures = unique(
            ([subject.value] if subject.kind is SubjectKind.SIGNATURE else [])
            + [i.tx_signature for i in intents if i.tx_signature]
            + [a.signature for a in attempts]
        )
        truncated |= len(users) > MAX_USERS or len(signatures) > MAX_SIGNATURES
        rows = await conn.fetch(
            _LEDGER, [i.id for i in intents], signatures[:MAX_SIGNATURES], users[:MAX_USERS], limit
        )
        ledger = [_ledger(r) for r in rows]
        # A credit of these signatures may name another intent (a duplicate): read it too.
        known = {i.id for i in intents}
        related = unique(
            t.intent_id
            for t in ledger
            if t.intent_id and t.intent_id not in known and t.purchase_signature in signatures
        )
        if related:
            rows = await conn.fetch(_INTENTS + "id = ANY($1::uuid[])", related[:limit])
            intents += [_intent(r) for r in rows]
            attempts += await _attempts(conn, related[:limit])
        users = unique(users + [t.user_id for t in ledger] + [i.user_id for i in intents])
        balances = [_balance(r) for r in await conn.fetch(_BALANCES, users[:MAX_USERS])]
    per_intent = Counter(a.intent_id for a in attempts)
    truncated |= any(n >= ATTEMPTS_PER_INTENT for n in per_intent.values())
    return Evidence(
        subject=subject,
        intents=tuple(sorted(intents, key=lambda i: i.created_at)),
        attempts=tuple(sorted(attempts, key=lambda a: (a.created_at, a.id))),
        ledger=tuple(ledger),
        balances=tuple(balances),
        truncated=truncated,
    )


async def _attempts(conn: asyncpg.Connection, intent_ids: list[uuid.UUID]) -> list[AttemptFacts]:
    if not intent_ids:
        return []
    return [_attempt(r) for r in await conn.fetch(_ATTEMPTS, intent_ids, ATTEMPTS_PER_INTENT)]


async def window_summary(db: asyncpg.Pool | asyncpg.Connection, window: Window) -> WindowSummary:
    """The verification attempts of `window`, aggregated in SQL (the `created_at` index),
    plus the intents created in it that are still PENDING (the partial pending index)."""
    async with _snapshot(db) as conn:
        groups = await conn.fetch(
            """SELECT outcome, code, count(*) AS attempts, min(created_at) AS first_seen,
                      max(created_at) AS last_seen
               FROM verification_attempts WHERE created_at >= $1 AND created_at < $2
               GROUP BY outcome, code""",
            window.start,
            window.end,
        )
        # Same predicate as triage_window.is_failure.
        failing = await conn.fetchrow(
            # GROUP BY (hash aggregates) rather than count(DISTINCT) (sorts that spill to
            # disk on a month of failures); per-user counts are computed once, used twice.
            """WITH failed AS (
                   SELECT user_id, intent_id FROM verification_attempts
                   WHERE created_at >= $1 AND created_at < $2
                     AND (outcome = ANY($3::text[])
                          OR (outcome = 'pending' AND code = 'rpc_unavailable'))),
               per_user AS (SELECT user_id, count(*) AS n FROM failed GROUP BY user_id)
               SELECT (SELECT count(*) FROM per_user) AS users,
                      (SELECT count(*) FROM (
                          SELECT i.wallet FROM purchase_intents i
                          WHERE i.id IN (SELECT intent_id FROM failed) AND i.wallet IS NOT NULL
                          GROUP BY i.wallet) w) AS wallets,
                      (SELECT coalesce(array_agg(array[user_id, n::text]
                                                 ORDER BY n DESC, user_id), '{}')
                         FROM (SELECT user_id, n FROM per_user
                               ORDER BY n DESC, user_id LIMIT $4) t) AS top""",
            window.start,
            window.end,
            sorted(FAILED_OUTCOMES),
            TOP_FAILING_USERS,
        )
        still_pending = await conn.fetchval(
            """SELECT count(*) FROM purchase_intents
               WHERE status = 'PENDING' AND created_at >= $1 AND created_at < $2""",
            window.start,
            window.end,
        )
    assert failing is not None
    rows = [
        AttemptSummaryRow(
            r["outcome"], r["code"], int(r["attempts"]), r["first_seen"], r["last_seen"]
        )
        for r in groups
    ]
    top = tuple((str(u), int(n)) for u, n in failing["top"])
    affected = FailingUsers(int(failing["users"]), int(failing["wallets"]), top)
    return summarise(window, rows, affected, int(still_pending))


# --- rows -> facts ----------------------------------------------------------------------


def _intent(r: Any) -> IntentFacts:
    return IntentFacts(
        id=r["id"],
        user_id=r["user_id"],
        credits=int(r["credits"]),
        amount=int(r["amount"]),
        wallet=r["wallet"],
        status=IntentStatus(r["status"]),
        tx_signature=r["tx_signature"],
        reject_code=r["reject_code"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        confirmed_at=r["confirmed_at"],
    )


def _attempt(r: Any) -> AttemptFacts:
    return AttemptFacts(
        id=int(r["id"]),
        intent_id=r["intent_id"],
        user_id=r["user_id"],
        signature=r["signature"],
        request_id=r["request_id"],
        source=r["source"],
        outcome=r["outcome"],
        code=r["code"],
        detail=r["detail"],
        created_at=r["created_at"],
    )


def _ledger(r: Any) -> LedgerFacts:
    return LedgerFacts(
        transaction_id=int(r["id"]),
        kind=LedgerKind(r["kind"]),
        user_id=r["user_id"],
        amount=int(r["amount"]),
        intent_id=r["intent_id"],
        purchase_signature=r["purchase_signature"],
        reverses_id=r["reverses_id"],
        created_at=r["created_at"],
    )


def _balance(r: Any) -> BalanceFacts:
    return BalanceFacts(r["user_id"], int(r["cached"]), int(r["entries_sum"]))
