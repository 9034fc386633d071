"""One measured run of each mode: pgbench, the HTTP load generator, the core credit path.

Each returns the `(start, end, ok)` records that `bench.perf_stats.summarise` turns into
throughput and latency, so every mode is measured over the same kind of window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.perf_sql import PRICE, Mirror, bench_intent, pgbench_defines, signature
from bench.perf_stack import Database, socket_dir
from bench.perf_stats import Record
from core.audit import Actor
from core.chain.verdict import Confirmed
from core.purchases import credit_in

_runs = itertools.count()


# --- pgbench ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgbenchRun:
    records: list[Record]
    tps_reported: float  # pgbench's own figure over its whole run, for cross-checking
    seconds: int


def pgbench_seconds(warmup: float, duration: float) -> int:
    """pgbench's -T: whole seconds, at least two."""
    return max(2, math.ceil(warmup + duration))


async def pgbench(
    db: Database,
    dsn: str,
    work_dir: Path,
    mirror: Mirror,
    *,
    clients: int,
    users: int,
    cpu: int | None,
    base: int,
    warmup: float,
    duration: float,
) -> PgbenchRun:
    """The mirror's credit script at `clients` connections (one pgbench thread, pinned to
    `cpu`), crediting synthetic intents from `base` on; per-transaction log for the window."""
    script = work_dir / f"credit-{mirror.name}.pgbench"
    script.write_text(mirror.pgbench_script)
    log_dir = work_dir / f"pgbench-{next(_runs)}"
    log_dir.mkdir()
    seconds = pgbench_seconds(warmup, duration)
    database = dsn.partition("?")[0].rpartition("/")[2]
    args = [
        str(db.bin_dir / "pgbench"),
        "-h",
        socket_dir(dsn),
        "-U",
        "postgres",
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        "1",
        "-T",
        str(seconds),
        "-l",
        "--log-prefix",
        str(log_dir / "tx"),
        *pgbench_defines(base=base, clients=clients, users=users),
        "-f",
        str(script),
        database,
    ]
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=log_dir,
        preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}),
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0 or "aborted" in text:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{text[-3000:]}")
    records: list[Record] = []
    for path in log_dir.glob("tx*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            # client_id transaction_no time_us script_no epoch_s epoch_us
            end = int(fields[4]) + int(fields[5]) / 1e6
            ok = fields[2].isdigit()
            latency = int(fields[2]) / 1e6 if ok else 0.0
            records.append((end - latency, end, ok))
    tps = 0.0
    for line in text.splitlines():
        if line.startswith("tps ="):
            tps = float(line.split()[2])
    return PgbenchRun(records, tps, seconds)


# --- the HTTP load generator -----------------------------------------------------------------


def http_request(
    method: str, path: str, port: int, *, token: str | None = None, body: bytes = b""
) -> str:
    """One raw HTTP/1.1 keep-alive request, as the load generator sends it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return "\r\n".join(lines) + "\r\n\r\n" + body.decode("latin-1")


@dataclass(frozen=True, slots=True)
class LoadRun:
    records: list[Record]
    statuses: dict[int, int]
    bodies: list[str | None]
    connect_s: float


async def load(
    work_dir: Path,
    port: int,
    requests: Sequence[str],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    cpu: int | None,
    mode: str = "closed",
    keep_bodies: bool = False,
    ok_statuses: frozenset[int] = frozenset({200}),
) -> LoadRun:
    """Run `bench.perf_load` in its own process (pinned to `cpu`) and read its records."""
    n = next(_runs)
    spec_path, out_path = work_dir / f"load-{n}.spec.json", work_dir / f"load-{n}.out.json"
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "requests": list(requests),
        "concurrency": concurrency,
        "warmup": warmup,
        "duration": duration,
        "cpu": cpu,
        "mode": mode,
        "keep_bodies": keep_bodies,
    }
    spec_path.write_text(json.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.perf_load",
        str(spec_path),
        str(out_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{out.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    spec_path.unlink()
    out_path.unlink()
    statuses: dict[int, int] = {}
    records: list[Record] = []
    for start, end, status in result["records"]:
        statuses[int(status)] = statuses.get(int(status), 0) + 1
        records.append((start, end, int(status) in ok_statuses))
    return LoadRun(records, statuses, result["bodies"], float(result["connect_s"]))


# --- the core credit path --------------------------------------------------------------------


async def warm_pool(pool: asyncpg.Pool, connections: int) -> None:
    """Open up to `connections` pool connections before the clock starts (pgbench, too,
    connects all its clients first)."""
    n = min(connections, pool.get_max_size())
    held = [await pool.acquire() for _ in range(n)]
    for conn in held:
        await pool.release(conn)


async def core(
    pool: asyncpg.Pool,
    *,
    clients: int,
    first: int,
    count: int,
    users: int,
    warmup: float,
    duration: float,
) -> list[Record]:
    """`credit_in` through the pool, exactly as the service's `_credit` runs it (acquire,
    transaction, credit_in), from `clients` concurrent tasks; no HTTP and no RPC."""
    await warm_pool(pool, clients)
    verdict = Confirmed(received=PRICE, payer="bench-payer", slot=1, block_time=None)
    records: list[Record] = []
    numbers = iter(range(first, first + count))
    deadline = time.perf_counter() + warmup + duration

    async def client() -> None:
        for n in numbers:
            start = time.perf_counter()
            if start >= deadline:
                return
            actor = Actor(id=f"bench-user-{n % users}", source="api", request_id="bench-request")
            ok = True
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await credit_in(conn, actor, bench_intent(n, users), signature(n), verdict)
            except (asyncpg.PostgresError, LookupError):
                ok = False
            records.append((start, time.perf_counter(), ok))

    await asyncio.gather(*(client() for _ in range(clients)))
    return records


async def credit_in_statements(pool: asyncpg.Pool, first: int, users: int) -> list[str]:
    """The SQL statements one real `credit_in` sends (asyncpg's query logger), to pick the
    pgbench and bare-handler mirror that sends the same. Credits intents `first` and
    `first + 1` on one connection and reports the second: the first also carries asyncpg's
    one-time type introspection."""
    verdict = Confirmed(received=PRICE, payer="bench-payer", slot=1, block_time=None)
    sent: list[str] = []
    async with pool.acquire() as conn:

        def logged(record: Any) -> None:
            sent.append(" ".join(str(record.query).split()))

        for n in (first, first + 1):
            actor = Actor(id=f"bench-user-{n % users}", source="api", request_id="bench-request")
            conn.add_query_logger(logged)
            try:
                async with conn.transaction():
                    await credit_in(conn, actor, bench_intent(n, users), signature(n), verdict)
            finally:
                conn.remove_query_logger(logged)
            await asyncio.sleep(0)  # asyncpg calls its loggers with call_soon: let them run
            if n == first:
                sent.clear()
    return sent
