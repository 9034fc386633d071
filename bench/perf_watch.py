"""The treasury watcher's cost per payment, in the perf run, beside the end-to-end verify.

A second `payops serve` runs with the watcher on. Every other scheduled job is pushed a day
away and the incident timeline follower an hour (it would otherwise start by reading the
whole audit log the run wrote), so the CPU measured is the watcher's: its polls, its reads
of each transaction, its credits. Intents are created through the one-worker service's API
(the watcher's service answers no request), then paid on the local chain in one batch: the
window runs from just before the first payment until the last intent is credited. The
service's, PostgreSQL's and this process's CPU over that window, per payment, is what
detecting and crediting a payment costs with no client request at all. The same service
idle for a few seconds first (once its watcher has started) gives what polling alone costs
per second.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import perf_cpu, perf_stack
from bench.perf_config import Config, say
from bench.perf_work import created_intents, pay, profiled

# Every job and stream but the watcher an hour or a day away: the run measures the watcher.
WATCHER_ENV = {
    "PAYOPS_SCHEDULER_ENABLED": "true",
    "PAYOPS_WATCH_ENABLED": "true",
    "PAYOPS_RECOVERY_MIN_AGE_SECONDS": "86400",
    "PAYOPS_RECOVERY_INTERVAL_SECONDS": "86400",
    "PAYOPS_RECONCILE_INTERVAL_SECONDS": "86400",
    "PAYOPS_EXPIRE_INTERVAL_SECONDS": "86400",
    "PAYOPS_AUDIT_SEAL_INTERVAL_SECONDS": "3600",
    "PAYOPS_HOUSEKEEPING_INTERVAL_SECONDS": "86400",
    # the incident timeline follower would first read the whole audit log the run wrote
    "PAYOPS_INCIDENT_FEED_INTERVAL_SECONDS": "3600",
}
SETTLE_SECONDS = 3.0  # after the watcher's first poll, before the idle window
IDLE_SECONDS = 5.0
CREDIT_TIMEOUT_SECONDS = 300.0


async def watcher(
    cfg: Config,
    database: perf_stack.Database,
    dsn: str,
    chain: perf_stack.Chain,
    work: Path,
    *,
    api_port: int,
    tokens: list[str],
    payments: int,
) -> dict[str, Any]:
    """`payments` intents paid with no verify request; the watcher's service credits them."""
    say("watcher: starting payops serve with the treasury watcher on")
    async with perf_stack.service(
        dsn, chain.info, work, event_loop="uvloop" if cfg.uvloop else "asyncio",
        extra_env=WATCHER_ENV, name="service-watcher",
    ) as (service, _url):  # fmt: skip
        meter = perf_cpu.CpuMeter(database.pgdata, {"service": service.pid})
        conn = await asyncpg.connect(dsn)
        try:
            await _until(conn, "SELECT count(*) FROM treasury_cursor", 1, 60.0)
            await asyncio.sleep(SETTLE_SECONDS)
            before = meter.snapshot()
            await asyncio.sleep(IDLE_SECONDS)
            idle = meter.per_transaction(before, meter.snapshot(), 1)
            idle_per_s = {k: round(v / IDLE_SECONDS, 3) for k, v in idle.items()}

            intents, _ = await created_intents(cfg, api_port, tokens, payments, work)
            say(f"watcher: paying {payments} intents, none verified by a client")
            ids = [i["id"] for i in intents]
            async with profiled(cfg, service.pid, cfg.out_dir / "profile-watcher.txt"):
                before = meter.snapshot()
                started = time.perf_counter()
                pay(cfg, chain, intents)
                paid_s = time.perf_counter() - started
                await _until(
                    conn,
                    "SELECT count(*) FROM ledger_transactions WHERE intent_id = ANY($1::uuid[])",
                    payments,
                    CREDIT_TIMEOUT_SECONDS,
                    ids,
                )
                elapsed = time.perf_counter() - started
                cpu = meter.per_transaction(before, meter.snapshot(), payments)
            sources = await conn.fetch(
                """SELECT source, count(*) AS n FROM verification_attempts
                   WHERE intent_id = ANY($1::uuid[]) GROUP BY source""",
                ids,
            )
        finally:
            await conn.close()
    say(f"watcher: {payments} credited {elapsed:.1f} s after the first payment")
    return {
        "payments": payments,
        "paid_s": round(paid_s, 2),
        "all_credited_s": round(elapsed, 2),
        "credited_per_s": round(payments / elapsed, 1),
        "cpu_ms_per_payment": cpu,
        "idle_cpu_ms_per_s": idle_per_s,
        "attempts_by_source": {r["source"]: int(r["n"]) for r in sources},
    }


async def _until(
    conn: asyncpg.Connection, query: str, wanted: int, seconds: float, *args: Any
) -> None:
    """Until `query`'s count reaches `wanted` (polled every 0.1 s), or RuntimeError."""
    deadline = time.perf_counter() + seconds
    while (count := int(await conn.fetchval(query, *args))) < wanted:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"after {seconds:.0f} s, {count} of {wanted}: {query}")
        await asyncio.sleep(0.1)
