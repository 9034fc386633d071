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
RSS, and `/pay-triage` lookups over a million bulk-loaded intents. Writes
`<out>/perf.json`, `<out>/perf.md` and `<out>/perf.png` (when matplotlib is installed).

The load generators (pgbench's client and the HTTP load generator, each its own process) are
pinned to one CPU; the servers (PostgreSQL, the ceiling, the service), the core-path runner
(this process) and the local chain (also this process) are not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from solders.pubkey import Pubkey

from bench import perf_report, perf_runs, perf_sql, perf_stack, perf_triage
from bench.perf_stats import Record, RunStats, latency_summary, summarise, summarise_rounds
from core import audit, db
from localnet.records import TxRecord
from localnet.tokens import build_payment

MODES = ("pgbench", "ceiling", "core", "e2e")
# Credits per second pgbench cannot exceed here (its intents are prepared before it runs; a
# client that runs out stops the run with "expected one row, got 0": raise these then).
PGBENCH_CAP = 6000


@dataclass(frozen=True)
class Config:
    quick: bool
    levels: tuple[int, ...]
    warmup: float
    duration: float
    users: int
    duplicates: int
    triage_intents: int
    triage_per_kind: int
    client_cpu: int | None
    out_dir: Path
    work_dir: Path | None
    keep: bool
    profile: bool
    rounds: int
    uvloop: bool
    # Intents prepared per second of run: pgbench's pool is sized from these caps, every
    # other mode's from the pgbench rate just measured at the same concurrency.
    pgbench_cap: dict[int, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.warmup + self.duration


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    p.add_argument("--levels", default="1,16,64", help="concurrencies (default 1,16,64)")
    p.add_argument("--duration", type=float, help="measured seconds per slice (3; quick 0.7)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds first (1; quick 0.5)")
    p.add_argument("--users", type=int, default=1000, help="users owning the intents")
    p.add_argument("--duplicates", type=int, help="concurrent duplicate verifies (1000; quick 250)")
    p.add_argument("--triage-intents", type=int, help="intents for triage (1e6; quick 1e4)")
    p.add_argument("--client-cpu", type=int, help="CPU for the clients (default: the last)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--work-dir", type=Path, help="where PostgreSQL and logs go (default: tmp)")
    p.add_argument("--rounds", type=int, help="interleaved slices per mode and level (3; quick 1)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the event loop of the service, the ceiling and the core path (default uvloop,"
        " the service's default)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the service with py-spy during each end-to-end run (<out>/profile-*.svg)",
    )
    a = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu = a.client_cpu if a.client_cpu is not None else cpus[-1]
    quick = bool(a.quick)
    return Config(
        quick=quick,
        levels=tuple(int(x) for x in a.levels.split(",")),
        warmup=a.warmup if a.warmup is not None else (0.5 if quick else 1.0),
        duration=a.duration if a.duration is not None else (0.7 if quick else 3.0),
        users=a.users,
        duplicates=a.duplicates or (250 if quick else 1000),
        triage_intents=a.triage_intents or (10_000 if quick else 1_000_000),
        triage_per_kind=20 if quick else 100,
        client_cpu=client_cpu if len(cpus) > 1 else None,
        out_dir=a.out,
        work_dir=a.work_dir,
        keep=a.keep,
        profile=a.profile,
        rounds=a.rounds or (1 if quick else 3),
        uvloop=a.event_loop == "uvloop",
        pgbench_cap={1: 2000},
    )


def say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


# --- preparing work --------------------------------------------------------------------------


class Numbers:
    """Hands out ranges of synthetic intent numbers, never twice."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> int:
        first = self.next
        self.next += count
        return first


@dataclass(frozen=True, slots=True)
class PaidIntent:
    id: str
    user: int
    signature: str


async def paid_intents(
    cfg: Config, chain: perf_stack.Chain, port: int, tokens: list[str], count: int, work: Path
) -> tuple[list[PaidIntent], RunStats]:
    """`count` intents created through the service's API, each paid on the local chain by a
    real SPL transfer carrying its reference (built and landed in-process, in one batch)."""
    create = [
        perf_runs.http_request(
            "POST", "/v1/purchase-intents", port, token=tokens[i % cfg.users], body=b'{"credits":1}'
        )
        for i in range(count)
    ]
    run = await perf_runs.load(
        work,
        port,
        create,
        concurrency=32,
        warmup=0,
        duration=3600,
        cpu=cfg.client_cpu,
        keep_bodies=True,
        ok_statuses=frozenset({201}),
    )
    if run.statuses != {201: count}:
        raise RuntimeError(f"creating intents answered {run.statuses}")
    info = chain.info
    payer = info.payer_keypair()
    mint = Pubkey.from_string(info.mint)
    treasury = Pubkey.from_string(info.treasury_owner)
    program = Pubkey.from_string(info.token_program)
    paid = []
    blockhash = chain.chain.latest_blockhash()[0]
    for i, body in enumerate(run.bodies):
        assert body is not None
        intent = json.loads(body)
        if i % 200 == 0:
            blockhash = chain.chain.latest_blockhash()[0]
        tx = build_payment(
            payer,
            blockhash,
            mint=mint,
            recipient_owner=treasury,
            amount=int(intent["amount"]),
            decimals=info.decimals,
            token_program=program,
            references=[Pubkey.from_string(intent["reference"])],
        )
        landed = chain.chain.process(tx)
        if not isinstance(landed, TxRecord) or landed.execution.err is not None:
            raise RuntimeError(f"payment of intent {intent['id']} did not land: {landed}")
        paid.append(PaidIntent(intent["id"], i % cfg.users, str(tx.signatures[0])))
    stats = summarise(run.records, warmup=0, duration=3600)
    return paid, stats


def verify_requests(port: int, tokens: list[str], intents: list[PaidIntent]) -> list[str]:
    return [
        perf_runs.http_request(
            "POST",
            f"/v1/purchase-intents/{p.id}/verify",
            port,
            token=tokens[p.user],
            body=perf_sql.json_body({"signature": p.signature}),
        )
        for p in intents
    ]


async def quiesce(dsn: str) -> None:
    """Before every slice: seal the audit rows earlier work left (the service seals every
    second, and no slice should pay for sealing another's rows), then a checkpoint, so each
    slice pays the same full-page writes."""
    conn = await asyncpg.connect(dsn)
    try:
        await audit.seal(conn)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def credited(dsn: str, intent_ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM ledger_transactions WHERE intent_id = ANY($1::uuid[])",
                intent_ids,
            )
        )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def profiled(cfg: Config, pid: int, path: Path) -> AsyncIterator[None]:
    """py-spy (when --profile) sampling `pid` into `path` as collapsed stacks."""
    if not cfg.profile:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, when not on PATH
    exe = str(beside) if beside.exists() else "py-spy"
    spy = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
        "--output", str(path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


class RssSampler:
    """Samples a process's RSS every 50 ms while load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_rss_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.max_rss_kib = max(self.max_rss_kib, perf_stack.memory_kib(self.pid)["VmRSS"])
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._sample())
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --- the run ---------------------------------------------------------------------------------


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
    await _create(dsn, first, 2, cfg.users)
    statements = await perf_runs.credit_in_statements(pool, first, cfg.users)
    sql = [s for s in statements if s.upper().rstrip(";") not in ("BEGIN", "COMMIT")]
    mirror = perf_sql.mirror_for(len(sql))
    result["mirror"] = {"name": mirror.name, "credit_in_statements": len(sql), "sql": sql}
    async with (
        perf_stack.service(
            dsn, chain.info, work, event_loop="uvloop" if cfg.uvloop else "asyncio"
        ) as (service, service_url),
        perf_stack.ceiling(dsn, mirror.name, work, uvloop=cfg.uvloop) as (ceiling, ceiling_port),
    ):
        port = int(service_url.rsplit(":", 1)[1])
        rss = RssSampler(service.pid)
        meter = perf_stack.CpuMeter(
            database.pgdata, {"service": service.pid, "ceiling": ceiling.pid}
        )
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
                rpc_before = chain.requests[0]
                credited_reqs = credited_requests[steady]
                wanted = int(3000 * cfg.seconds)  # more than the duplicate path answers
                repeats = -(-wanted // len(credited_reqs))
                again = await perf_runs.load(
                    work,
                    port,
                    (credited_reqs * repeats)[:wanted],
                    concurrency=steady,
                    warmup=cfg.warmup,
                    duration=cfg.duration,
                    cpu=cfg.client_cpu,
                )
                result["duplicates"]["steady"] = _http_stats(cfg, again, 0) | {
                    "clients": steady,
                    "rpc_requests": chain.requests[0] - rpc_before,
                }
        result["service_memory"] = {
            "peak_rss_mb": round(perf_stack.memory_kib(service.pid)["VmHWM"] * 1024 / 1e6, 1),
            "max_sampled_rss_under_load_mb": round(rss.max_rss_kib * 1024 / 1e6, 1),
        }
    await pool.close()


@dataclass
class Slice:
    """One measured slice of one mode: its records, its CPU and what else it found."""

    records: list[Record]
    cpu_seconds: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


class Slices:
    """Runs the four modes at one concurrency in `rounds` interleaved slices (pgbench,
    ceiling, core, e2e, then again), so that every mode samples the same stretches of the
    machine's background load, and merges each mode's slices."""

    def __init__(
        self,
        cfg: Config,
        database: perf_stack.Database,
        dsn: str,
        chain: perf_stack.Chain,
        work: Path,
        pool: asyncpg.Pool,
        tokens: list[str],
        numbers: Numbers,
        mirror: perf_sql.Mirror,
        meter: perf_stack.CpuMeter,
        rss: RssSampler,
        service_pid: int,
        port: int,
        ceiling_port: int,
    ) -> None:
        self.cfg, self.database, self.dsn, self.chain = cfg, database, dsn, chain
        self.work, self.pool, self.tokens, self.numbers = work, pool, tokens, numbers
        self.mirror, self.meter, self.rss = mirror, meter, rss
        self.service_pid, self.port, self.ceiling_port = service_pid, port, ceiling_port
        self.create_stats: list[dict[str, Any]] = []
        self.credited_requests: dict[int, list[str]] = {}  # verifies that credited, by level

    async def level(self, clients: int) -> dict[str, Any]:
        cfg = self.cfg
        runs: dict[str, list[Slice]] = {mode: [] for mode in MODES}
        # Work is prepared ahead of each slice, sized from the fastest slice so far of the
        # mode that bounds it: pgbench bounds the SQL clients, the ceiling the service.
        pg_rate = ceiling_rate = 0.0
        for r in range(cfg.rounds):
            say(f"c={clients}: round {r + 1}/{cfg.rounds}: pgbench")
            runs["pgbench"].append(await self.pgbench(clients))
            pg_rate = max(pg_rate, self._rate(runs["pgbench"][-1]))
            budget = self._budget(pg_rate, clients)
            say(f"c={clients}: round {r + 1}/{cfg.rounds}: HTTP ceiling")
            runs["ceiling"].append(await self.ceiling(clients, budget))
            ceiling_rate = max(ceiling_rate, self._rate(runs["ceiling"][-1]))
            say(f"c={clients}: round {r + 1}/{cfg.rounds}: core credit path")
            runs["core"].append(await self.core(clients, budget))
            say(f"c={clients}: round {r + 1}/{cfg.rounds}: end-to-end verify")
            runs["e2e"].append(await self.e2e(clients, self._budget(ceiling_rate, clients), r))
        return {mode: self._merge(slices) for mode, slices in runs.items()}

    def _rate(self, run: Slice) -> float:
        return summarise(run.records, **self._window).throughput

    def _budget(self, rate: float, clients: int) -> int:
        return int(max(rate, 50) * 1.5 * self.cfg.seconds) + clients * 4

    @property
    def _window(self) -> dict[str, float]:
        return {"warmup": self.cfg.warmup, "duration": self.cfg.duration}

    def _merge(self, slices: list[Slice]) -> dict[str, Any]:
        stats = summarise_rounds([s.records for s in slices], **self._window)
        transactions = sum(len(s.records) for s in slices)
        cpu = {
            side: round(sum(s.cpu_seconds[side] for s in slices) * 1000 / max(transactions, 1), 3)
            for side in slices[0].cpu_seconds
        }
        merged: dict[str, Any] = stats.to_json() | {"rounds": len(slices), "cpu_ms_per_tx": cpu}
        for s in slices:
            for key, value in s.extra.items():
                if isinstance(value, bool):
                    merged[key] = merged.get(key, False) or value
                elif isinstance(value, int | float):
                    merged[key] = merged.get(key, 0) + value
                elif isinstance(value, dict):
                    into = merged.setdefault(key, {})
                    for k, v in value.items():
                        into[k] = into.get(k, 0) + v
        return merged

    async def _measured(self, run: Any) -> tuple[Any, dict[str, float]]:
        """Quiesce, then `run()` with the CPU it took on every side."""
        await quiesce(self.dsn)
        before = self.meter.snapshot()
        outcome = await run()
        await asyncio.sleep(0.3)  # let the postmaster reap exited backends (their CPU)
        after = self.meter.snapshot()
        return outcome, {k: after[k] - before[k] for k in before}

    async def pgbench(self, clients: int) -> Slice:
        cfg = self.cfg
        seconds = perf_runs.pgbench_seconds(cfg.warmup, cfg.duration)
        budget = seconds * cfg.pgbench_cap.get(clients, PGBENCH_CAP) + clients * 4
        base = self.numbers.take(budget)
        await _create(self.dsn, base, budget, cfg.users)
        pg, cpu = await self._measured(
            lambda: perf_runs.pgbench(
                self.database, self.dsn, self.work, self.mirror, clients=clients,
                cpu=cfg.client_cpu, base=base, warmup=cfg.warmup, duration=cfg.duration,
            )
        )  # fmt: skip
        return Slice(pg.records, cpu)

    async def ceiling(self, clients: int, budget: int) -> Slice:
        first = self.numbers.take(budget)
        await _create(self.dsn, first, budget, self.cfg.users)
        reqs = [
            perf_runs.http_request("POST", f"/credit/{n}", self.ceiling_port)
            for n in range(first, first + budget)
        ]
        run, cpu = await self._measured(lambda: self._load(self.ceiling_port, reqs, clients))
        return Slice(run.records, cpu, self._http_extra(run, budget))

    async def core(self, clients: int, budget: int) -> Slice:
        first = self.numbers.take(budget)
        await _create(self.dsn, first, budget, self.cfg.users)
        records, cpu = await self._measured(
            lambda: perf_runs.core(
                self.pool, clients=clients, first=first, count=budget, users=self.cfg.users,
                warmup=self.cfg.warmup, duration=self.cfg.duration,
            )
        )  # fmt: skip
        return Slice(records, cpu, {"exhausted": len(records) >= budget})

    async def e2e(self, clients: int, budget: int, round_no: int) -> Slice:
        cfg = self.cfg
        intents, create_run = await paid_intents(
            cfg, self.chain, self.port, self.tokens, budget, self.work
        )
        self.create_stats.append({"intents": budget, **create_run.to_json()})
        reqs = verify_requests(self.port, self.tokens, intents)
        rpc_before = self.chain.requests[0]
        profile = cfg.out_dir / f"profile-e2e-c{clients}-r{round_no + 1}.txt"

        async def run() -> perf_runs.LoadRun:
            async with self.rss.sampling(), profiled(cfg, self.service_pid, profile):
                return await self._load(self.port, reqs, clients)

        load_run, cpu = await self._measured(run)
        ok = load_run.statuses.get(200, 0)
        # The load generator sends its requests in order: these are the ones it sent.
        self.credited_requests.setdefault(clients, []).extend(reqs[: len(load_run.records)])
        credited_now = await credited(self.dsn, [p.id for p in intents])
        if credited_now != ok:
            raise RuntimeError(f"{ok} verifies answered 200 but {credited_now} were credited")
        extra = self._http_extra(load_run, budget) | {
            "rpc_requests": self.chain.requests[0] - rpc_before,
            "credited": credited_now,
        }
        return Slice(load_run.records, cpu, extra)

    async def _load(self, port: int, reqs: list[str], clients: int) -> perf_runs.LoadRun:
        return await perf_runs.load(
            self.work,
            port,
            reqs,
            concurrency=clients,
            cpu=self.cfg.client_cpu,
            warmup=self.cfg.warmup,
            duration=self.cfg.duration,
        )

    @staticmethod
    def _http_extra(load_run: perf_runs.LoadRun, budget: int) -> dict[str, Any]:
        return {
            "statuses": {str(k): v for k, v in sorted(load_run.statuses.items())},
            "exhausted": len(load_run.records) >= budget,
        }


async def _create(dsn: str, first: int, count: int, users: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await perf_sql.create_intents(conn, first, count, users)
    finally:
        await conn.close()


def _http_stats(cfg: Config, load_run: perf_runs.LoadRun, budget: int) -> dict[str, Any]:
    stats = summarise(load_run.records, warmup=cfg.warmup, duration=cfg.duration)
    return stats.to_json() | {
        "statuses": {str(k): v for k, v in sorted(load_run.statuses.items())},
        "exhausted": len(load_run.records) >= budget,
    }


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


async def service_rpc_requests(port: int) -> int:
    """The service's own count of RPC requests (`SolanaRpc.stats`, on /metrics as
    `payops_rpc_requests_total`), or -1 when it does not publish it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("payops_rpc_requests_total{")
    ]
    return int(sum(found)) if found else -1


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
    failed = [name for name, t in result["targets"].items() if t["met"] is False]
    say(f"done in {result['elapsed_s']} s; targets missed: {', '.join(failed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
