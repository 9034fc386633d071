"""Benchmark: a full and an incremental reconciliation run over N purchase intents.

    python -m bench.recon [--intents 1000000] [--new 1000] [--out bench/results/recon.json]

Starts an embedded PostgreSQL in a temporary directory, migrates it, bulk-loads N intents
with their purchase ledger transactions (two entries each), verification attempts and cached
balances in set-based `INSERT ... SELECT generate_series` statements (triggers off for the
load: `session_replication_role = replica`; balances then set from the entries in one
`UPDATE ... FROM` aggregate so every invariant holds), analyzes, and times:

- a full run (cold, then warm),
- an incremental run after `--new` intents made through the normal code path
  (`intents_db.insert`, and `purchases.credit_in` for most of them),
- a window run over the last 24 hours.

The chain side is skipped (chain=None). Every run must report zero drift: the data is
consistent, so anything else is a bug in the loader or the checks. Results are printed and
written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.perf_cpu import postgres_cpu_seconds
from core import db, purchases
from core import purchases as intents_db
from core.audit import Actor
from core.chain.verdict import Confirmed
from core.config import PaymentConfig
from core.embedded_db import EmbeddedPostgres
from core.purchases import new_intent
from core.recon import ReconRun, run_reconciliation

MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
TREASURY = "3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui"
TREASURY_ACCOUNT = "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
PRICE = 10_000
PAYMENT = PaymentConfig(
    mint=MINT,
    token_program=TOKEN_PROGRAM,
    decimals=6,
    treasury_owner=TREASURY,
    treasury_token_account=TREASURY_ACCOUNT,
    price_per_credit=PRICE,
    max_credits_per_intent=1_000_000,
    intent_ttl_seconds=900,
)
ACTOR = Actor("bench", "cli")
SLA = timedelta(hours=1)

# Intent g (1..N): status by g % 100 — 0..1 PENDING (made in the last hour), 2..4 REJECTED
# (underpaid), 5..14 EXPIRED, the rest CONFIRMED. Created over the last 90 days.
_LOAD = [
    """INSERT INTO accounts (kind, name, user_id)
       SELECT 'user', 'user:u' || u, 'u' || u FROM generate_series(0, $1 - 1) u""",
    """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
           recipient, recipient_token_account, reference, memo, wallet, status, tx_signature,
           received_amount, reject_code, created_at, expires_at, confirmed_at, updated_at)
       SELECT id, 'u' || (g % $2), credits, credits * $3, $4, $5, $6, $7,
              'ref' || substr(md5(g::text), 1, 30), id::text, NULL, status,
              CASE WHEN status = 'CONFIRMED' THEN sig END,
              CASE WHEN status = 'CONFIRMED' THEN credits * $3 END,
              CASE WHEN status = 'REJECTED' THEN 'underpaid' END,
              created, created + interval '15 minutes',
              CASE WHEN status = 'CONFIRMED' THEN created + interval '30 seconds' END,
              created + interval '30 seconds'
       FROM (SELECT g, md5('intent' || g)::uuid AS id, 1 + g % 50 AS credits,
                    substr(encode(sha512(int8send(g)), 'hex'), 1, 88) AS sig,
                    CASE WHEN g % 100 < 2 THEN 'PENDING' WHEN g % 100 < 5 THEN 'REJECTED'
                         WHEN g % 100 < 15 THEN 'EXPIRED' ELSE 'CONFIRMED' END AS status,
                    CASE WHEN g % 100 < 2 THEN now() - (g % 3000) * interval '1 second'
                         ELSE now() - interval '90 days' + (g::float8 / $1) * interval '89 days'
                    END AS created
             FROM generate_series(1, $1) g) x""",
    """INSERT INTO ledger_transactions (id, kind, intent_id, purchase_signature, description,
           created_by, created_at)
       SELECT row_number() OVER (ORDER BY created_at, id), 'purchase', id, tx_signature,
              'purchase of ' || credits || ' credits, intent ' || id, 'bench', confirmed_at
       FROM purchase_intents WHERE status = 'CONFIRMED'""",
    """SELECT setval('ledger_transactions_id_seq', (SELECT max(id) FROM ledger_transactions))""",
    """INSERT INTO ledger_entries (transaction_id, account_id, amount, created_at)
       SELECT t.id, x.account, x.amount, t.created_at
       FROM ledger_transactions t
       JOIN purchase_intents i ON i.id = t.intent_id
       JOIN accounts a ON a.user_id = i.user_id
       CROSS JOIN LATERAL (VALUES (a.id, i.credits),
           ((SELECT id FROM accounts WHERE name = 'system:token_sales'), -i.credits))
           AS x(account, amount)
       ORDER BY t.id""",
    """INSERT INTO verification_attempts (intent_id, user_id, signature, source, outcome, code,
           detail, request_id, created_at)
       SELECT id, user_id, coalesce(tx_signature, 'x' || substr(md5(id::text), 1, 80)), 'api',
              CASE status WHEN 'CONFIRMED' THEN 'confirmed' WHEN 'REJECTED' THEN 'rejected'
                          ELSE 'pending' END,
              CASE status WHEN 'REJECTED' THEN 'underpaid' WHEN 'CONFIRMED' THEN NULL
                          ELSE 'tx_not_found' END,
              NULL, NULL, created_at + interval '30 seconds'
       FROM purchase_intents""",
    # the cached balances, consistent with the entries
    """INSERT INTO user_balances (account_id, user_id, balance)
       SELECT id, user_id, 0 FROM accounts WHERE kind = 'user'""",
    """UPDATE user_balances b SET balance = s.total
       FROM (SELECT account_id, sum(amount) AS total FROM ledger_entries
             GROUP BY account_id) s
       WHERE s.account_id = b.account_id""",
]


async def load(dsn: str, intents: int, users: int) -> float:
    """Bulk-load `intents` intents for `users` users; seconds taken."""
    started = time.perf_counter()
    # Autovacuum paused while loading: one running alongside the loader's VACUUM holds back
    # the xmin horizon, and pages stay not all-visible (no index-only scans) — unlike a live
    # database, whose older pages autovacuum keeps all-visible.
    await _autovacuum(dsn, on=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET work_mem = '512MB'")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        args: dict[int, tuple[Any, ...]] = {
            0: (users,),
            1: (intents, users, PRICE, MINT, TOKEN_PROGRAM, TREASURY, TREASURY_ACCOUNT),
        }
        for i, statement in enumerate(_LOAD):
            t = time.perf_counter()
            await conn.execute(statement, *args.get(i, ()))
            print(f"  load step {i}: {time.perf_counter() - t:.1f}s", flush=True)
        await conn.execute("RESET session_replication_role")
        t = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        print(f"  vacuum analyze: {time.perf_counter() - t:.1f}s", flush=True)
    finally:
        await conn.close()
        await _autovacuum(dsn, on=True)
    return time.perf_counter() - started


async def _autovacuum(dsn: str, *, on: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET autovacuum = {'on' if on else 'off'}")
        await conn.execute("SELECT pg_reload_conf()")
        if not on:  # and wait for any running worker to finish
            for _ in range(600):
                busy = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                )
                if not busy:
                    break
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def add_intents(pool: asyncpg.Pool, count: int, users: int) -> None:
    """`count` new intents through the normal path; 9 in 10 credited by `credit_in`."""
    now = datetime.now(UTC)
    for n in range(count):
        intent = new_intent(
            user_id=f"u{n % users}", credits=1 + n % 50, wallet=None, payment=PAYMENT, now=now
        )
        async with pool.acquire() as conn:
            await intents_db.insert(conn, intent)
            if n % 10:
                signature = f"new{uuid.uuid4().hex}{uuid.uuid4().hex}"[:88]
                verdict = Confirmed(received=intent.amount, payer=None, slot=1, block_time=now)
                async with conn.transaction():
                    await purchases.credit_in(conn, ACTOR, intent, signature, verdict)


@dataclass
class Timing:
    wall: float
    server_cpu: float
    python_cpu: float
    run: ReconRun


DATA_DIR: Path = Path()


async def timed(pool: asyncpg.Pool, label: str, **kwargs: Any) -> Timing:
    started = time.perf_counter()
    cpu0, py0 = postgres_cpu_seconds(DATA_DIR), time.process_time()
    run = await run_reconciliation(
        pool,
        None,
        now=datetime.now(UTC),
        actor=ACTOR,
        pending_sla=SLA,
        payment=PAYMENT,
        **kwargs,
    )
    seconds = time.perf_counter() - started
    timing = Timing(seconds, postgres_cpu_seconds(DATA_DIR) - cpu0, time.process_time() - py0, run)
    print(
        f"{label}: {seconds:.3f}s wall, {timing.server_cpu:.3f}s postgres cpu, "
        f"{timing.python_cpu:.3f}s python cpu  mode={run.mode} zero_drift={run.zero_drift} "
        f"confirmed={run.totals.confirmed_intents} drift={run.drift_credits} "
        f"findings={len(run.findings)}",
        flush=True,
    )
    for f in run.findings[:5]:
        print(f"    {f.kind}: {f.detail}")
    return timing


def _summary(t: Timing) -> dict[str, Any]:
    run = t.run
    return {
        "seconds": round(t.wall, 3),
        "postgres_cpu_seconds": round(t.server_cpu, 3),
        "python_cpu_seconds": round(t.python_cpu, 3),
        "mode": run.mode.value,
        "zero_drift": run.zero_drift,
        "findings": len(run.findings),
        "totals": run.totals.to_json(),
    }


async def bench(
    intents: int, users: int, new: int, workdir: Path, *, keep: bool = False
) -> dict[str, Any]:
    global DATA_DIR
    DATA_DIR = workdir / "data"
    load_before = os.getloadavg()  # the machine is shared: say how busy it was
    server = EmbeddedPostgres(workdir / "data", delete_on_stop=not keep)
    admin = await asyncio.to_thread(server.start_sync)
    try:
        conn = await asyncpg.connect(admin)
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")  # a throwaway server
            await conn.execute("SELECT pg_reload_conf()")
            loaded = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'payops_bench'")
            if not loaded:
                await conn.execute("CREATE DATABASE payops_bench")
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        dsn = server.dsn("payops_bench")
        load_seconds = 0.0
        if loaded:
            print(f"reusing the database loaded in {workdir}", flush=True)
        else:
            await db.migrate(dsn)
            print(f"loading {intents} intents for {users} users ...", flush=True)
            load_seconds = await load(dsn, intents, users)
            print(f"loaded in {load_seconds:.1f}s", flush=True)
        pool = await db.create_pool(dsn, min_size=2, max_size=4)
        try:
            cold = await timed(pool, "full run (cold)", full=True)
            warm = await timed(pool, "full run (warm)", full=True)
            started = time.perf_counter()
            await add_intents(pool, new, users)
            add_seconds = time.perf_counter() - started
            print(f"added {new} intents through the normal path in {add_seconds:.1f}s")
            incremental = await timed(pool, f"incremental run after {new} new intents")
            again = await timed(pool, "incremental run, nothing new")
            window = await timed(
                pool, "window run, last 24h", window_start=datetime.now(UTC) - timedelta(days=1)
            )
            sizes = await pool.fetchrow(
                """SELECT (SELECT count(*) FROM purchase_intents) AS intents,
                          (SELECT count(*) FROM ledger_transactions) AS ledger_transactions,
                          (SELECT count(*) FROM ledger_entries) AS ledger_entries,
                          (SELECT count(*) FROM verification_attempts) AS attempts,
                          pg_database_size(current_database()) AS bytes"""
            )
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(server.stop_sync)
    runs = [cold, warm, incremental, again, window]
    return {
        "command": f"python -m bench.recon --intents {intents} --users {users} --new {new}",
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": version,
            "platform": platform.platform(),
        },
        "data": dict(sizes) if sizes else {},
        "load_seconds": round(load_seconds, 1),
        "full_cold": _summary(cold),
        "full_warm": _summary(warm),
        "added_intents": new,
        "incremental": _summary(incremental),
        "incremental_nothing_new": _summary(again),
        "window_24h": _summary(window),
        "targets": {"full_seconds": 10.0, "incremental_seconds": 0.5},
        "met": {
            "full": warm.wall < 10.0 and cold.wall < 10.0,
            "incremental": incremental.wall < 0.5,
            "zero_drift": all(t.run.zero_drift for t in runs),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recon", description=__doc__)
    parser.add_argument("--intents", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: intents / 10")
    parser.add_argument(
        "--new", type=int, default=1000, help="intents added before the incremental run"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "recon.json"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the server here and reuse a database loaded there before (for profiling)",
    )
    args = parser.parse_args(argv)
    users = args.users or max(1, args.intents // 10)
    keep = args.data_dir is not None
    workdir = args.data_dir or Path(tempfile.mkdtemp(prefix="payops-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the server runs as its own system user when run as root
    try:
        results = asyncio.run(bench(args.intents, users, args.new, workdir, keep=keep))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(results["met"]), f"-> {args.out}")


if __name__ == "__main__":
    main()
