"""`/pay-triage` lookups (`core.triage_db.triage`) over a million intents.

The history is bulk-loaded with INSERT ... SELECT generate_series, with triggers off
(`session_replication_role = replica`) so the load is fast: 30 days of intents (10 per user,
a third with a wallet, 60 % confirmed), a purchase ledger transaction with its two entries
per confirmed intent, a verification attempt per intent. The balance cache, which the
skipped trigger would have kept, is then set by one aggregate UPDATE, and ANALYZE runs.
Lookups go through the real `triage` (without the chain: the database side is what grows
with the history), one at a time, for each kind of subject.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from solders.pubkey import Pubkey
from solders.signature import Signature

from bench.perf_stats import latency_summary
from core import db, ledger
from core.triage import triage, triage_window

INTENTS_PER_USER = 10
INTENTS_PER_REAL_SIGNATURE = 100  # the others get a cheap unique text signature
DAYS = 30

_LOAD = [
    """INSERT INTO accounts (kind, name, user_id)
       SELECT 'user', 'user:tu-' || u, 'tu-' || u FROM generate_series(0, $1 - 1) u""",
    # n = 0 .. N-1, oldest first; n % 10 < 6 confirmed, 6 rejected, 7 expired, else pending.
    """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
           recipient, recipient_token_account, reference, memo, wallet, status, tx_signature,
           received_amount, reject_code, created_at, expires_at, confirmed_at, updated_at)
       SELECT md5('triage' || n)::uuid, 'tu-' || (n % $2), 1 + n % 5, (1 + n % 5) * 10000,
              'mint', 'program', 'treasury', 'treasury-ata', 'tref-' || n,
              md5('triage' || n)::uuid::text,
              CASE WHEN n % 3 = 0 THEN ($3::text[])[1 + (n / 3) % cardinality($3::text[])] END,
              CASE WHEN n % 10 < 6 THEN 'CONFIRMED' WHEN n % 10 = 6 THEN 'REJECTED'
                   WHEN n % 10 = 7 THEN 'EXPIRED' ELSE 'PENDING' END,
              CASE WHEN n % $5 = 0 THEN ($4::text[])[1 + n / $5]
                   WHEN n % 10 < 6 THEN 'tsig-' || n END,
              CASE WHEN n % 10 < 6 THEN (1 + n % 5) * 10000 END,
              CASE WHEN n % 10 = 6 THEN 'underpaid' END,
              t, t + interval '15 minutes',
              CASE WHEN n % 10 < 6 THEN t + interval '30 seconds' END, t
       FROM generate_series(0, $1 - 1) n,
            LATERAL (SELECT now() - ($1 - n) * ($6 * interval '1 day' / $1)) AS c(t)""",
    """INSERT INTO ledger_transactions (kind, intent_id, purchase_signature, description,
           created_by, created_at)
       SELECT 'purchase', id, tx_signature, 'purchase of ' || credits || ' credits', user_id,
              confirmed_at
       FROM purchase_intents WHERE status = 'CONFIRMED' ORDER BY confirmed_at""",
    """INSERT INTO ledger_entries (transaction_id, account_id, amount, created_at)
       SELECT t.id, x.account_id, x.amount, t.created_at
       FROM ledger_transactions t
       JOIN purchase_intents i ON i.id = t.intent_id
       JOIN accounts u ON u.name = 'user:' || i.user_id
       CROSS JOIN LATERAL (VALUES (u.id, i.credits),
           ((SELECT id FROM accounts WHERE name = 'system:token_sales'), -i.credits))
           AS x(account_id, amount)
       ORDER BY t.id""",
    """INSERT INTO verification_attempts (intent_id, user_id, signature, source, outcome,
           code, detail, request_id, created_at)
       SELECT id, user_id, coalesce(tx_signature, 'tsig-' || reference),
              'api', CASE status WHEN 'CONFIRMED' THEN 'confirmed' WHEN 'REJECTED'
                     THEN 'rejected' ELSE 'pending' END,
              CASE status WHEN 'REJECTED' THEN 'underpaid' WHEN 'CONFIRMED' THEN NULL
                     ELSE 'not_found' END,
              'bulk-loaded', md5(reference), created_at + interval '20 seconds'
       FROM purchase_intents""",
    """INSERT INTO user_balances (account_id, user_id, balance)
       SELECT id, user_id, 0 FROM accounts WHERE kind = 'user'""",
    # The trigger was off during the load: set the cache from the entries, in one statement.
    """UPDATE user_balances b SET balance = s.total, updated_at = now()
       FROM (SELECT account_id, sum(amount) AS total FROM ledger_entries
             GROUP BY account_id) s
       WHERE b.account_id = s.account_id""",
]


_BIG_TABLES = ["purchase_intents", "ledger_transactions", "ledger_entries", "verification_attempts"]

# Keys and indexes of the bulk-loaded tables, and the foreign keys touching them: dropped
# before the load and rebuilt after it, which is several times faster than maintaining
# random-uuid b-trees row by row.
_KEYS = """SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def,
                  contype::text AS contype
           FROM pg_constraint
           WHERE contype IN ('p', 'u', 'f')
             AND (conrelid = ANY($1::regclass[]) OR confrelid = ANY($1::regclass[]))
           ORDER BY contype = 'f', conname"""
_INDEXES = """SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
              FROM pg_index i
              WHERE indrelid = ANY($1::regclass[])
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""


async def _drop_keys(conn: asyncpg.Connection) -> tuple[list[Any], list[Any]]:
    keys = await conn.fetch(_KEYS, _BIG_TABLES)
    indexes = await conn.fetch(_INDEXES, _BIG_TABLES)
    for k in sorted(keys, key=lambda k: k["contype"] != "f"):  # foreign keys first
        await conn.execute(f'ALTER TABLE {k["tab"]} DROP CONSTRAINT "{k["conname"]}"')
    for i in indexes:
        await conn.execute(f"DROP INDEX {i['name']}")
    return keys, indexes


async def _restore_keys(conn: asyncpg.Connection, keys: list[Any], indexes: list[Any]) -> None:
    for k in keys:  # primary and unique keys, then foreign keys (they need the former)
        await conn.execute(f'ALTER TABLE {k["tab"]} ADD CONSTRAINT "{k["conname"]}" {k["def"]}')
    for i in indexes:
        await conn.execute(i["def"])


async def load_history(dsn: str, intents: int) -> dict[str, Any]:
    """Bulk-load `intents` intents and their ledger; how long each step took."""
    users = max(1, intents // INTENTS_PER_USER)
    wallets = [str(Pubkey.from_bytes(os.urandom(32))) for _ in range(max(1, intents // 100))]
    signatures = [
        str(Signature.from_bytes(os.urandom(64)))
        for _ in range(intents // INTENTS_PER_REAL_SIGNATURE + 1)
    ]
    args: list[tuple[Any, ...]] = [
        (users,),
        (intents, users, wallets, signatures, INTENTS_PER_REAL_SIGNATURE, DAYS),
        (),
        (),
        (),
        (),
        (),
    ]
    steps: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        keys, indexes = await _drop_keys(conn)
        steps["drop keys and indexes"] = round(time.perf_counter() - started, 2)
        for sql, params in zip(_LOAD, args, strict=True):
            started = time.perf_counter()
            await conn.execute(sql, *params)
            steps[" ".join(sql.split()[:3]).lower()] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        await _restore_keys(conn, keys, indexes)
        steps["rebuild keys and indexes"] = round(time.perf_counter() - started, 2)
        await conn.execute("SET session_replication_role = DEFAULT")
        started = time.perf_counter()
        await conn.execute("ANALYZE")
        steps["analyze"] = round(time.perf_counter() - started, 2)
        health = await ledger.health(conn)
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM purchase_intents) AS intents,
                      (SELECT count(*) FROM ledger_transactions) AS ledger_transactions,
                      (SELECT count(*) FROM ledger_entries) AS ledger_entries,
                      (SELECT count(*) FROM verification_attempts) AS attempts,
                      pg_database_size(current_database()) AS bytes"""
        )
    finally:
        await conn.close()
    assert counts is not None
    if not health.ok:
        raise RuntimeError(f"the bulk-loaded ledger is inconsistent: {health}")
    return {"rows": dict(counts.items()), "load_seconds": steps, "ledger_ok": health.ok}


async def lookups(dsn: str, intents: int, per_kind: int, *, seed: int = 8) -> dict[str, Any]:
    """`triage` of `per_kind` random users, wallets, signatures and intent ids, one at a time;
    plus the window summary (`/pay-triage last 2h`)."""
    rng = random.Random(seed)
    users = max(1, intents // INTENTS_PER_USER)
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    try:
        picks = {
            "user": [f"tu-{rng.randrange(users)}" for _ in range(per_kind)],
            "intent": [
                str(r["id"])
                for r in await pool.fetch(
                    "SELECT id FROM purchase_intents ORDER BY random() LIMIT $1", per_kind
                )
            ],
            "wallet": [
                r["wallet"]
                for r in await pool.fetch(
                    """SELECT wallet FROM (SELECT DISTINCT wallet FROM purchase_intents
                       WHERE wallet IS NOT NULL) w ORDER BY random() LIMIT $1""",
                    per_kind,
                )
            ],
            "signature": [
                r["tx_signature"]
                for r in await pool.fetch(
                    """SELECT tx_signature FROM purchase_intents
                       WHERE tx_signature NOT LIKE 'tsig-%' ORDER BY random() LIMIT $1""",
                    per_kind,
                )
            ],
        }
        now = datetime.now(UTC)
        sla = timedelta(hours=1)
        for texts in picks.values():  # warm the pool and the plans, not measured
            await triage(pool, None, texts[0], now, sla)
        per_kind_stats: dict[str, Any] = {}
        every: list[float] = []
        for kind, texts in picks.items():
            latencies = []
            found = 0
            for text in texts:
                started = time.perf_counter()
                report = await triage(pool, None, text, now, sla)
                latencies.append(time.perf_counter() - started)
                found += bool(report.evidence.intents)
            every += latencies
            per_kind_stats[kind] = {"lookups": len(texts), "found": found} | latency_summary(
                latencies
            )
        window = []
        for _ in range(max(5, per_kind // 10)):
            started = time.perf_counter()
            await triage_window(pool, "last 2h", now)
            window.append(time.perf_counter() - started)
    finally:
        await pool.close()
    return {
        "lookups": len(every),
        **latency_summary(every),
        "by_kind": per_kind_stats,
        "window_last_2h": {"lookups": len(window)} | latency_summary(window),
    }
