"""The fault tests' word from the database: an observer pool of their own, the
exactly-once check, nothing written by killed requests, the audit log sealed again, and the
one-line figures each test prints.

`assert_exactly_once`, from the database, for each intent: CONFIRMED by its signature, one
purchase ledger transaction, one `confirmed` attempt, one `intent.confirm` audit record; for
each user: cached balance = sum of entries = what they paid for; the ledger zero-sum with no
unbalanced transaction; no purchase credit other than these.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from core import ledger
from tests.e2e.faults import HEAVY, OBSERVER, Paid, Tally
from tests.e2e.procs import wait_until

# --- the database's word --------------------------------------------------------------------


async def _init_observer(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


@contextlib.asynccontextmanager
async def observer(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """The test's own pool, named `OBSERVER` so a fault aimed at the service spares it."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=4,
        init=_init_observer,
        server_settings={"application_name": OBSERVER, "timezone": "UTC"},
    )
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


async def assert_exactly_once(
    pool: asyncpg.Pool, paid: Sequence[Paid], *, other_purchases: int = 0
) -> None:
    """Each of `paid` credited exactly once, nothing half-written, the ledger's invariants.

    `other_purchases`: purchase credits the test made besides `paid` (the database must hold
    exactly `len(paid) + other_purchases`)."""
    ids = [uuid.UUID(p.id) for p in paid]
    rows = await pool.fetch(
        """SELECT i.id, i.status, i.tx_signature,
             (SELECT count(*) FROM ledger_transactions t
               WHERE t.intent_id = i.id AND t.kind = 'purchase') AS purchases,
             (SELECT count(*) FROM verification_attempts a
               WHERE a.intent_id = i.id AND a.outcome = 'confirmed') AS confirmations,
             (SELECT count(*) FROM audit_log l
               WHERE l.action = 'intent.confirm' AND l.subject = 'intent:' || i.id::text)
               AS confirm_audits
           FROM purchase_intents i WHERE i.id = ANY($1::uuid[])""",
        ids,
    )
    by_id = {str(r["id"]): r for r in rows}
    wrong = []
    for p in paid:
        r = by_id.get(p.id)
        got = (
            None
            if r is None
            else (
                r["status"],
                r["tx_signature"] == p.signature,
                r["purchases"],
                r["confirmations"],
                r["confirm_audits"],
            )
        )
        if got != ("CONFIRMED", True, 1, 1, 1):
            wrong.append(f"{p.id}: (status, own signature, purchases, confirmed, audits) = {got}")
    assert not wrong, f"{len(wrong)} of {len(paid)} intents not credited exactly once:\n" + (
        "\n".join(wrong[:20])
    )

    owed: Counter[str] = Counter()
    for p in paid:
        owed[p.user] += p.credits
    money = await pool.fetch(
        """SELECT u.user_id,
             coalesce((SELECT b.balance FROM user_balances b WHERE b.user_id = u.user_id), 0)
               AS balance,
             coalesce((SELECT sum(e.amount) FROM ledger_entries e
                 JOIN accounts a ON a.id = e.account_id WHERE a.user_id = u.user_id), 0)
               AS entries
           FROM unnest($1::text[]) AS u(user_id)""",
        list(owed),
    )
    for r in money:
        assert r["balance"] == r["entries"] == owed[r["user_id"]], (dict(r), owed[r["user_id"]])

    health = await ledger.health(pool)
    assert health.ok, health
    purchases = await pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE kind='purchase'"
    )
    assert purchases == len(paid) + other_purchases
    half_written = await pool.fetchval(
        """SELECT count(*) FROM purchase_intents i
           WHERE (i.status = 'CONFIRMED') <> EXISTS (
               SELECT 1 FROM ledger_transactions t WHERE t.intent_id = i.id)"""
    )
    assert half_written == 0


async def assert_nothing_from(pool: asyncpg.Pool, request_ids: Sequence[str]) -> None:
    """No attempt and no audit record carries any of `request_ids`: those requests' database
    transactions left nothing behind."""
    found = await pool.fetchval(
        """SELECT (SELECT count(*) FROM verification_attempts WHERE request_id = ANY($1))
                + (SELECT count(*) FROM audit_log WHERE request_id = ANY($1))""",
        list(request_ids),
    )
    assert found == 0, f"{found} rows written by requests that never got an answer"


async def await_sealed(pool: asyncpg.Pool, *, within: float = 10.0) -> None:
    """The service's background sealing (every second) chains every audit row again: it
    survived the fault too."""

    async def sealed() -> bool:
        return not await pool.fetchval("SELECT count(*) FROM audit_log WHERE seq IS NULL")

    await wait_until(sealed, "every audit row sealed by the service again", within=within)


def summary(name: str, started: float, tally: Tally, **figures: Any) -> None:
    """One JSON line with the test's figures (shown with `pytest -s`)."""
    line = {
        "test": name,
        "heavy": HEAVY,
        "wall_seconds": round(time.monotonic() - started, 1),
        "requests": tally.requests,
        "answers": dict(sorted(tally.answers.items())),
        "credits_announced": sum(tally.credited.values()),
        # credited, but the answer saying so was lost to the fault; a retry said so
        "credit_answers_lost": len(tally.settled - set(tally.credited)),
        "slowest_answer_seconds": round(tally.slowest, 2),
        **figures,
    }
    print("FAULTS-SUMMARY " + json.dumps(line), flush=True)
