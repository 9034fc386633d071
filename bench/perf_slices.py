"""The interleaved slices of the perf run: at one concurrency, `Slices` runs the four modes
(pgbench, the HTTP ceiling, the core credit path, the end-to-end verify) in `rounds`
interleaved slices, each on work prepared ahead of it and sized from the fastest slice so far
of the mode that bounds it, measures each `Slice`'s records and CPU on every side, and merges
each mode's slices into one level of `perf.json`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import perf_cpu, perf_runs, perf_sql, perf_stack
from bench.perf_config import Config, say
from bench.perf_duplicates import service_counters
from bench.perf_stats import Record, summarise, summarise_rounds
from bench.perf_work import (
    Numbers,
    RssSampler,
    create_intents,
    credited,
    paid_intents,
    profiled,
    quiesce,
    verify_requests,
)

MODES = ("pgbench", "ceiling", "core", "e2e")
GROUP_COUNTERS = {
    "payops_credit_groups_total": "credit_groups",
    "payops_credits_grouped_total": "credits_grouped",
}
# Credits per second pgbench cannot exceed here (its intents are prepared before it runs; a
# client that runs out stops the run with "expected one row, got 0": raise these then).
PGBENCH_CAP = 6000


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
        meter: perf_cpu.CpuMeter,
        rss: RssSampler,
        service_pid: int,
        port: int,
        ceiling_port: int,
    ) -> None:
        self.cfg, self.database, self.dsn, self.chain = cfg, database, dsn, chain
        self.work, self.pool, self.tokens, self.numbers = work, pool, tokens, numbers
        self.mirror, self.meter, self.rss = mirror, meter, rss
        self.service_pid, self.port, self.ceiling_port = service_pid, port, ceiling_port
        self.label = "e2e"  # of the profiles' files
        self.create_stats: list[dict[str, Any]] = []
        self.credited_requests: dict[int, list[str]] = {}  # verifies that credited, by level

    async def workers(self, other: Slices, clients: int, rate: float) -> dict[str, Any]:
        """The end-to-end verify on this service (one worker) and on `other` (the same
        service with more workers), in interleaved slices at `clients`."""
        runs: dict[str, list[Slice]] = {"1": [], "n": []}
        for r in range(self.cfg.rounds):
            for key, side in (("1", self), ("n", other)):
                say(f"workers: c={clients}: round {r + 1}/{self.cfg.rounds}: {side.label}")
                slice_ = await side.e2e(clients, self._budget(rate, clients), r)
                rate = max(rate, self._rate(slice_))
                runs[key].append(slice_)
        return {key: self._merge(slices) for key, slices in runs.items()}

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
            runs["ceiling"].append(await self.ceiling(clients, budget, r))
            ceiling_rate = max(ceiling_rate, self._rate(runs["ceiling"][-1]))
            say(f"c={clients}: round {r + 1}/{cfg.rounds}: core credit path")
            runs["core"].append(await self.core(clients, budget))
            say(f"c={clients}: round {r + 1}/{cfg.rounds}: end-to-end verify")
            runs["e2e"].append(await self.e2e(clients, self._budget(ceiling_rate, clients), r))
        return {mode: self._merge(slices) for mode, slices in runs.items()}

    def _rate(self, run: Slice) -> float:
        rate = summarise(run.records, **self._window).throughput
        if rate == 0 and run.records:  # all done before the window: the rate over the run
            span = max(r[1] for r in run.records) - min(r[0] for r in run.records)
            rate = len(run.records) / max(span, 1e-3)
        return rate

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
        await create_intents(self.dsn, base, budget, cfg.users)
        pg, cpu = await self._measured(
            lambda: perf_runs.pgbench(
                self.database, self.dsn, self.work, self.mirror, clients=clients,
                users=cfg.users, cpu=cfg.client_cpu, base=base, warmup=cfg.warmup,
                duration=cfg.duration,
            )
        )  # fmt: skip
        return Slice(pg.records, cpu)

    async def ceiling(self, clients: int, budget: int, round_no: int) -> Slice:
        first = self.numbers.take(budget)
        await create_intents(self.dsn, first, budget, self.cfg.users)
        reqs = [
            perf_runs.http_request("POST", f"/credit/{n}", self.ceiling_port)
            for n in range(first, first + budget)
        ]
        # --profile: the bare handler too, so that its parts can be set beside the service's
        profile = self.cfg.out_dir / f"profile-ceiling-c{clients}-r{round_no + 1}.txt"
        pid = self.meter.pids["ceiling"]

        async def run() -> perf_runs.LoadRun:
            async with profiled(self.cfg, pid, profile):
                return await self._load(self.ceiling_port, reqs, clients)

        load_run, cpu = await self._measured(run)
        return Slice(load_run.records, cpu, self._http_extra(load_run, budget))

    async def core(self, clients: int, budget: int) -> Slice:
        first = self.numbers.take(budget)
        await create_intents(self.dsn, first, budget, self.cfg.users)
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
        profile = cfg.out_dir / f"profile-{self.label}-c{clients}-r{round_no + 1}.txt"

        async def run() -> perf_runs.LoadRun:
            async with self.rss.sampling(), profiled(cfg, self.service_pid, profile):
                return await self._load(self.port, reqs, clients)

        groups_before = await service_counters(self.port, *GROUP_COUNTERS)
        load_run, cpu = await self._measured(run)
        groups_after = await service_counters(self.port, *GROUP_COUNTERS)
        ok = load_run.statuses.get(200, 0)
        # The load generator sends its requests in order: these are the ones it sent.
        self.credited_requests.setdefault(clients, []).extend(reqs[: len(load_run.records)])
        credited_now = await credited(self.dsn, [p.id for p in intents])
        if credited_now != ok:
            raise RuntimeError(f"{ok} verifies answered 200 but {credited_now} were credited")
        extra = self._http_extra(load_run, budget) | {
            "rpc_requests": self.chain.requests[0] - rpc_before,
            "credited": credited_now,
            # group commit (core/purchases/grouped.py), as the worker that answered counts
            **{
                key: groups_after[name] - groups_before[name]
                for name, key in GROUP_COUNTERS.items()
            },
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
