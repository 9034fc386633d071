"""Verify throughput and latency against PostgreSQL's own limit, on one machine, in one run.

    python -m bench.perf [--quick] [--out bench/results]     (or: python -m bench perf)

On an embedded PostgreSQL with the service's durability defaults and the local chain, for
each concurrency (1, 16, 64), back to back so that the machine's background load hits every
mode alike:

- pgbench   the credit's SQL (bench/perf_sql.py) from C: PostgreSQL's own limit;
- ceiling   a bare aiohttp + asyncpg server running only that SQL per request;
- core      `credit_in` through the pool, no HTTP, no RPC;
- e2e       verify over HTTP: `payops serve` (its own process) + the local chain over
            JSON-RPC + the real `SolanaVerifier`, on intents created through the API and
            paid with real SPL transfers carrying their reference.

Then 1,000 concurrent verifies of one intent (the race: exactly one credit) and 1,000 more
once it is credited (none may reach the RPC or the ledger write path), the service's peak
RSS, `payops serve --workers 2` against one worker, the treasury watcher's CPU per payment it
detects and credits with no request (bench/perf_watch.py), and `/pay-triage` lookups over a
million bulk-loaded intents. Writes
`<out>/perf.json`, `<out>/perf.md` and `<out>/perf.png` (when matplotlib is installed).

The load generators (pgbench's client and the HTTP load generator, each its own process) are
pinned to one CPU; the servers (PostgreSQL, the ceiling, the service), the core-path runner
(this process) and the local chain (also this process) are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import (
    perf_cpu,
    perf_report,
    perf_runs,
    perf_sql,
    perf_stack,
    perf_triage,
    perf_watch,
    profile_shares,
)
from bench.perf_config import Config, parse_args, say
from bench.perf_duplicates import duplicates
from bench.perf_slices import Slices
from bench.perf_stats import summarise
from bench.perf_work import Numbers, RssSampler, create_intents, profiled
from core import db


async def run(cfg: Config) -> dict[str, Any]:
    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="payops-perf-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the server runs as its own system user when this runs as root
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.perf", *sys.argv[1:]]),
        "config": {
            "quick": cfg.quick,
            "levels": list(cfg.levels),
            "warmup_s": cfg.warmup,
            "duration_s": cfg.duration,
            "rounds": cfg.rounds,
            "event_loop": "uvloop" if cfg.uvloop else "asyncio",
            "users": cfg.users,
            "client_cpu": cfg.client_cpu,
            "load_generator": "bench/perf_load.py (Python asyncio, own process, pinned)",
        },
        "machine": machine(),
    }
    started = time.perf_counter()
    try:
        async with perf_stack.database(work) as database:
            result["postgres"] = await database.settings()
            dsn = await database.create("payops_bench")
            await db.migrate(dsn)
            async with perf_stack.local_chain() as chain:
                await throughput_and_duplicates(cfg, database, dsn, chain, work, result)
            say(f"triage: bulk-loading {cfg.triage_intents:,} intents")
            triage_dsn = await database.create("payops_triage")
            await db.migrate(triage_dsn)
            loaded = await perf_triage.load_history(triage_dsn, cfg.triage_intents)
            say(f"triage: {cfg.triage_per_kind} lookups per kind of subject")
            result["triage"] = {
                "intents": cfg.triage_intents,
                "load": loaded,
                **await perf_triage.lookups(triage_dsn, cfg.triage_intents, cfg.triage_per_kind),
            }
    finally:
        if not cfg.keep and cfg.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["targets"] = perf_report.targets(result)
    return result


async def throughput_and_duplicates(
    cfg: Config,
    database: perf_stack.Database,
    dsn: str,
    chain: perf_stack.Chain,
    work: Path,
    result: dict[str, Any],
) -> None:
    numbers = Numbers()
    conn = await asyncpg.connect(dsn)
    try:
        await perf_sql.create_users(conn, cfg.users)
    finally:
        await conn.close()
    tokens = [perf_stack.bearer(perf_sql.user_id(i)) for i in range(cfg.users)]
    size = perf_stack.pool_size()
    pool = await db.create_pool(dsn, min_size=size, max_size=size)
    # The mirror (pgbench's script, the bare handler's SQL) sends what credit_in sends.
    first = numbers.take(2)
    await create_intents(dsn, first, 2, cfg.users)
    statements = await perf_runs.credit_in_statements(pool, first, cfg.users)
    sql = [s for s in statements if s.upper().rstrip(";") not in ("BEGIN", "COMMIT")]
    mirror = perf_sql.mirror_for(len(sql))
    result["mirror"] = {"name": mirror.name, "credit_in_statements": len(sql), "sql": sql}
    async with (
        perf_stack.service(
            dsn, chain.info, work, event_loop="uvloop" if cfg.uvloop else "asyncio"
        ) as (service, service_url),
        perf_stack.ceiling(dsn, mirror.name, cfg.users, work, uvloop=cfg.uvloop) as (
            ceiling,
            ceiling_port,
        ),
    ):
        port = int(service_url.rsplit(":", 1)[1])
        rss = RssSampler(service.pid)
        meter = perf_cpu.CpuMeter(database.pgdata, {"service": service.pid, "ceiling": ceiling.pid})
        slices = Slices(
            cfg, database, dsn, chain, work, pool, tokens, numbers, mirror, meter, rss,
            service.pid, port, ceiling_port,
        )  # fmt: skip
        levels: dict[str, dict[str, Any]] = {}
        for clients in cfg.levels:
            level = await slices.level(clients)
            perf_report.add_ratios(level)
            levels[str(clients)] = level
            say(f"c={clients}: {perf_report.one_line(level)}")
        result["levels"] = levels
        result["create_intent"] = slices.create_stats
        credited_requests = slices.credited_requests

        say(f"duplicates: {cfg.duplicates} concurrent verifies of one intent, twice")
        async with rss.sampling():
            result["duplicates"] = await duplicates(cfg, chain, dsn, port, tokens, work)
            steady = max((c for c in credited_requests if c <= 16), default=None)
            if steady is not None and not cfg.quick:
                say(f"duplicates: repeating the credited verifies at {steady} clients")
                result["duplicates"]["steady"] = await steady_duplicates(
                    cfg, chain, work, port, meter, credited_requests[steady], steady,
                    profile=(service.pid, cfg.out_dir / "profile-duplicates.txt"),
                )  # fmt: skip
        result["service_memory"] = {
            "peak_rss_mb": round(perf_cpu.memory_kib(service.pid)["VmHWM"] * 1024 / 1e6, 1),
            "max_sampled_rss_under_load_mb": round(rss.max_rss_kib * 1024 / 1e6, 1),
        }
        if cfg.workers > 1:
            result["workers"] = await compare_workers(
                cfg, database, dsn, chain, work, slices, levels, credited_requests
            )
        if cfg.watch_payments > 0:
            result["watcher"] = await perf_watch.watcher(
                cfg, database, dsn, chain, work, api_port=port, tokens=tokens,
                payments=cfg.watch_payments,
            )  # fmt: skip
    await pool.close()


WORKERS_DUPLICATE_INTENTS = 500


async def compare_workers(
    cfg: Config,
    database: perf_stack.Database,
    dsn: str,
    chain: perf_stack.Chain,
    work: Path,
    one: Slices,
    levels: dict[str, dict[str, Any]],
    credited_requests: dict[int, list[str]],
) -> dict[str, Any]:
    """`payops serve` against `payops serve --workers N` in the same run: the end-to-end
    verify at 16 clients (or the highest level below), interleaved slices on each, their
    work sized from the end-to-end rate measured at that level; then the steady duplicates
    (the level's credited verifies again) on the N workers."""
    clients = max((c for c in cfg.levels if c <= 16), default=cfg.levels[0])
    rate = float(levels.get(str(clients), {}).get("e2e", {}).get("throughput", 0.0))
    say(f"workers: starting payops serve --workers {cfg.workers}")
    async with perf_stack.service(
        dsn, chain.info, work, event_loop="uvloop" if cfg.uvloop else "asyncio",
        workers=cfg.workers,
    ) as (service, url):  # fmt: skip
        port = int(url.rsplit(":", 1)[1])
        meter = perf_cpu.CpuMeter(database.pgdata, {"service": service.pid})
        many = Slices(
            cfg, database, dsn, chain, work, one.pool, one.tokens, one.numbers, one.mirror,
            meter, RssSampler(service.pid), service.pid, port, one.ceiling_port,
        )  # fmt: skip
        one.label, many.label = "e2e-w1", f"e2e-w{cfg.workers}"
        merged = await one.workers(many, clients, rate=rate)
        steady = None
        if credited_requests.get(clients) and not cfg.quick:
            # Each worker learns a settled pair from the database once; the first
            # WORKERS_DUPLICATE_INTENTS of them, repeated, are in both workers' caches
            # within the warm-up, as all of them are in the one worker's that credited them.
            credited = credited_requests[clients][:WORKERS_DUPLICATE_INTENTS]
            say(f"workers: repeating {len(credited)} credited verifies at {clients} clients")
            steady = await steady_duplicates(cfg, chain, work, port, meter, credited, clients)
    single, several = merged["1"], merged["n"]
    say(
        f"workers: {single['throughput']:.0f}/s with 1, {several['throughput']:.0f}/s with "
        f"{cfg.workers}"
    )
    return {
        "clients": clients,
        "workers": cfg.workers,
        "one": single,
        "many": several,
        "steady_duplicates": steady,
        "machine_bound": machine_bound(single),
        "throughput_ratio": round(several["throughput"] / max(single["throughput"], 1e-9), 3),
        "service_cpu_ratio": round(
            several["cpu_ms_per_tx"]["service"] / max(single["cpu_ms_per_tx"]["service"], 1e-9),
            3,
        ),
    }


def machine_bound(single: dict[str, Any]) -> dict[str, Any]:
    """The most verifies a second any number of workers could give on this machine: every
    CPU busy, each verify costing every process what it cost with one worker (the service,
    PostgreSQL, the local chain, the load generator). More workers can beat one by at most
    this bound over one worker's rate, unless they make a verify cheaper somewhere."""
    cpus = len(os.sched_getaffinity(0))
    cost = single["cpu_ms_per_tx"]
    all_processes = sum(v for side, v in cost.items() if not side.endswith("_kernel"))
    at_most = cpus * 1000 / max(all_processes, 1e-9)
    used = single["throughput"] * all_processes / 1000
    return {
        "cpus": cpus,
        "cpu_ms_per_verify": round(all_processes, 3),
        "cpus_busy_with_one_worker": round(used, 2),
        "verifies_per_s_at_most": round(at_most, 1),
        "throughput_ratio_at_most": round(at_most / max(single["throughput"], 1e-9), 3),
    }


async def steady_duplicates(
    cfg: Config,
    chain: perf_stack.Chain,
    work: Path,
    port: int,
    meter: perf_cpu.CpuMeter,
    credited: list[str],
    clients: int,
    *,
    profile: tuple[int, Path] | None = None,
) -> dict[str, Any]:
    """The verifies of `credited` (all credited) sent again and again at `clients`: each is
    a duplicate, which must reach neither the RPC nor the ledger."""
    rpc_before = chain.requests[0]
    wanted = int(3000 * cfg.seconds)  # more than the duplicate path answers
    repeats = -(-wanted // len(credited))
    cpu_before = meter.snapshot()
    async with profiled(cfg, profile[0], profile[1]) if profile else contextlib.nullcontext():
        again = await perf_runs.load(
            work,
            port,
            (credited * repeats)[:wanted],
            concurrency=clients,
            warmup=cfg.warmup,
            duration=cfg.duration,
            cpu=cfg.client_cpu,
        )
    await asyncio.sleep(0.3)  # let the postmaster reap exited backends
    cpu = meter.per_transaction(cpu_before, meter.snapshot(), len(again.records))
    return _http_stats(cfg, again, 0) | {
        "clients": clients,
        "rpc_requests": chain.requests[0] - rpc_before,
        "cpu_ms_per_tx": cpu,
    }


def _http_stats(cfg: Config, load_run: perf_runs.LoadRun, budget: int) -> dict[str, Any]:
    stats = summarise(load_run.records, warmup=cfg.warmup, duration=cfg.duration)
    return stats.to_json() | {
        "statuses": {str(k): v for k, v in sorted(load_run.statuses.items())},
        "exhausted": len(load_run.records) >= budget,
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.uvloop:
        import uvloop

        result = uvloop.run(run(cfg))
    else:
        result = asyncio.run(run(cfg))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    (cfg.out_dir / "perf.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = perf_report.markdown(result)
    (cfg.out_dir / "perf.md").write_text(table)
    print(table)
    chart = perf_report.chart(result, cfg.out_dir / "perf.png")
    say(chart)
    if cfg.profile:
        shares = profile_shares.report(cfg.out_dir, result)
        say(f"profile shares written to {shares}" if shares else "no profile was recorded")
    failed = [name for name, t in result["targets"].items() if t["met"] is False]
    say(f"done in {result['elapsed_s']} s; targets missed: {', '.join(failed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
