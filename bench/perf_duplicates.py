"""The duplicate-verify bursts of the perf run: N concurrent verifies of one fresh paid intent
(the race: exactly one credit), then N more once it is credited (none may reach the RPC or
the ledger write path), each checked against the ledger, the verification attempts, the local
chain's request count and the service's own RPC count on /metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import perf_runs, perf_stack
from bench.perf_config import Config
from bench.perf_stats import latency_summary
from bench.perf_work import paid_intents, quiesce, verify_requests


async def duplicates(
    cfg: Config,
    chain: perf_stack.Chain,
    dsn: str,
    port: int,
    tokens: list[str],
    work: Path,
) -> dict[str, Any]:
    """The race (N verifies of one fresh paid intent at once: exactly one credit) and then N
    more of the credited intent, which must never reach the RPC nor the ledger write path."""
    (intent,), _ = await paid_intents(cfg, chain, port, tokens, 1, work)
    reqs = verify_requests(port, tokens, [intent]) * cfg.duplicates
    out: dict[str, Any] = {"intent_id": intent.id, "concurrent": cfg.duplicates}
    for phase in ("race", "after_credit"):
        await quiesce(dsn)
        rpc_before = chain.requests[0]
        stats_before = await service_rpc_requests(port)
        conn = await asyncpg.connect(dsn)
        try:
            since = await conn.fetchval("SELECT clock_timestamp()")
            burst = await perf_runs.load(
                work, port, reqs, concurrency=0, warmup=0, duration=0, cpu=cfg.client_cpu,
                mode="burst",
            )  # fmt: skip
            facts = await conn.fetchrow(
                """SELECT
                     (SELECT count(*) FROM ledger_transactions WHERE intent_id = $1::uuid)
                       AS credits,
                     (SELECT count(*) FROM verification_attempts
                      WHERE intent_id = $1::uuid AND created_at >= $2) AS attempts,
                     (SELECT count(*) FROM verification_attempts
                      WHERE intent_id = $1::uuid AND created_at >= $2
                        AND detail LIKE 'received %') AS through_credit_path""",
                intent.id,
                since,
            )
        finally:
            await conn.close()
        assert facts is not None
        latencies = [end - start for start, end, _ in burst.records]
        out[phase] = {
            "statuses": {str(k): v for k, v in sorted(burst.statuses.items())},
            "connect_s": round(burst.connect_s, 3),
            **latency_summary(latencies),
            "burst_s": round(
                max(r[1] for r in burst.records) - min(r[0] for r in burst.records), 3
            ),
            "rpc_requests": chain.requests[0] - rpc_before,
            "rpc_requests_service_stats": await service_rpc_requests(port) - stats_before,
            "ledger_credits_of_intent": int(facts["credits"]),
            "attempts_recorded": int(facts["attempts"]),
            "reached_ledger_write_path": int(facts["through_credit_path"]),
        }
        if facts["credits"] != 1:
            raise RuntimeError(f"{phase}: the intent was credited {facts['credits']} times")
    after = out["after_credit"]
    out["exactly_one_credit"] = out["race"]["ledger_credits_of_intent"] == 1
    out["after_credit_never_reached_rpc_or_ledger"] = (
        after["rpc_requests"] == 0
        and after["rpc_requests_service_stats"] <= 0
        and after["reached_ledger_write_path"] == 0
    )
    return out


async def service_counters(port: int, *names: str) -> dict[str, int]:
    """The sums of the service's /metrics samples named `names` (any labels), -1 for a
    name it does not publish. With workers, one worker answers."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    sums = dict.fromkeys(names, -1.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] = max(sums[name], 0.0) + float(line.rsplit(" ", 1)[1])
    return {name: int(value) for name, value in sums.items()}


async def service_rpc_requests(port: int) -> int:
    """The service's own count of RPC requests (`SolanaRpc.stats`, on /metrics as
    `payops_rpc_requests_total`), or -1 when it does not publish it."""
    return (await service_counters(port, RPC_REQUESTS))[RPC_REQUESTS]


RPC_REQUESTS = "payops_rpc_requests_total"
