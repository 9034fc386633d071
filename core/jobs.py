"""Scheduled job runs: each tick of each job runs once across replicas, and is recorded.

Every replica runs the same scheduler, firing each job at the same wall-clock ticks: the
multiples of its interval since the Unix epoch (`tick_of`). At a tick, a replica

1. takes the job's PostgreSQL advisory lock, `pg_try_advisory_lock(JOB_LOCK_CLASS,
   lock_key(job))`, on a connection it holds for the whole run. Not granted -> another
   replica is running the job right now: skip this tick. The lock is what keeps two runs of
   one job from overlapping; it is released when the run ends, or by the server when the
   connection dies (the process was killed).
2. claims the tick: inserts the `job_runs` row (job, tick) as 'running'; the unique index
   `job_runs_once_per_tick` lets only one replica do that per tick, so a replica whose clock
   fires a little after another's finished run does not run the tick again. Claimed
   already -> skip.
3. runs the job, and records the outcome ('ok' or 'failed', with a detail and facts).

A run that raised is 'failed' and the next tick runs the job again. A run whose process died
stays 'running' until the next replica that takes the lock marks it 'failed' (abandoned)
and runs the job at its own tick. Skipped ticks are not written to `job_runs` (they would
outnumber the runs by the number of replicas); they are counted in the
`payops_job_runs_total{outcome="skipped"}` metric instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core import db

log = logging.getLogger("payops.jobs")

JOB_LOCK_CLASS = 7305  # first key of the two-key advisory locks payops jobs take
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Outcome(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a job returns: a line for people, facts for machines (stored as jsonb)."""

    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    ok: bool = True  # False: the job did not do its work (e.g. RPC down); recorded 'failed'


@dataclass(frozen=True, slots=True)
class JobRun:
    id: int
    job: str
    tick: datetime
    replica: str
    started_at: datetime
    finished_at: datetime | None
    outcome: Outcome
    detail: str
    facts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ran:
    """One tick on this replica: the outcome (SKIPPED when another replica had it)."""

    job: str
    tick: datetime
    outcome: Outcome
    run_id: int | None = None
    detail: str = ""
    abandoned: int = 0  # runs of dead processes this tick marked failed


def replica_id() -> str:
    """This process, as `job_runs.replica` names it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_key(job: str) -> int:
    """The second advisory-lock key of a job: stable across processes and versions."""
    return zlib.crc32(job.encode()) & 0x7FFFFFFF


def tick_of(now: datetime, interval: float) -> datetime:
    """The tick `now` belongs to: the latest multiple of `interval` seconds since the epoch.

    Replicas fire their scheduler at these same instants, so each names a tick alike."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    micros = round(interval * 1_000_000)
    since = (now - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=since - since % micros)


async def lead(
    pool: asyncpg.Pool,
    name: str,
    interval: float,
    work: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Run `work` every `interval` seconds on one replica at a time, until `stop` is set.

    For work that follows a stream (the treasury watcher, webhook delivery) rather than
    ticks: a replica leads while it holds `name`'s advisory lock on a connection of its own,
    and checks that connection before each round, so a leader that lost it (the database
    restarted) stops at once. A replica that died releases the lock with its connection;
    the others try for it every `interval`. Nothing is written to `job_runs`."""
    while not stop.is_set():
        try:
            async with db.session(pool) as conn:
                if await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", JOB_LOCK_CLASS, lock_key(name)
                ):
                    log.info("%s: leading on %s", name, replica_id())
                    while not stop.is_set():
                        await conn.fetchval("SELECT 1")  # still ours: the lock lives with it
                        await work()
                        await _wait(stop, interval)
        except db.DATABASE_ERRORS as exc:
            log.warning("%s: database unavailable: %s", name, exc)
        except Exception:
            # A bug must not stop the work for good: say so loudly, then try again.
            log.exception("%s: round failed", name)
        await _wait(stop, interval)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_once(
    pool: asyncpg.Pool,
    job: str,
    tick: datetime,
    replica: str,
    work: Callable[[], Awaitable[RunResult]],
) -> Ran:
    """Run `work` for this tick of `job` unless another replica has it (module docstring).

    Never raises for a failing job: the failure is recorded and returned. A cancellation
    (the service stopping) is recorded as a failed run, then propagates."""
    async with db.session(pool) as conn:
        if not await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", JOB_LOCK_CLASS, lock_key(job)
        ):
            return Ran(job, tick, Outcome.SKIPPED, detail="another replica holds the job")
        try:
            abandoned = await _mark_abandoned(conn, job)
            run_id = await _claim(conn, job, tick, replica)
            if run_id is None:
                return Ran(
                    job, tick, Outcome.SKIPPED, detail="tick already run", abandoned=abandoned
                )
            try:
                result = await work()
                outcome = Outcome.OK if result.ok else Outcome.FAILED
                detail, facts = result.detail[:2000], result.facts
            except Exception as exc:
                outcome, detail, facts = Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:2000], {}
                log.exception("job %s failed (tick %s)", job, tick.isoformat())
            except BaseException:
                with contextlib.suppress(Exception):
                    await _finish(
                        conn, run_id, Outcome.FAILED, "cancelled: the service stopped mid-run", {}
                    )
                raise
            try:
                await _finish(conn, run_id, outcome, detail, facts)
            except db.DATABASE_ERRORS as exc:
                # The row stays 'running'; the next holder of the lock marks it abandoned.
                log.warning("job %s: cannot record the outcome of run %s: %s", job, run_id, exc)
            return Ran(job, tick, outcome, run_id, detail, abandoned)
        finally:
            # Failing here (connection gone) is harmless: the lock went with the connection,
            # and the pool's reset on release unlocks all advisory locks anyway.
            with contextlib.suppress(Exception):
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, $2)", JOB_LOCK_CLASS, lock_key(job)
                )


async def _mark_abandoned(conn: asyncpg.Connection, job: str) -> int:
    """Runs of `job` still 'running' while we hold its lock belong to dead processes."""
    rows = await conn.fetch(
        """UPDATE job_runs SET outcome = 'failed', finished_at = clock_timestamp(),
               detail = 'abandoned: the process running it died (its lock was released)'
           WHERE job = $1 AND outcome = 'running' RETURNING id, replica, tick""",
        job,
    )
    for r in rows:
        log.warning(
            "job %s: run %s of %s (tick %s) was abandoned mid-run; marked failed",
            job,
            r["id"],
            r["replica"],
            r["tick"].isoformat(),
        )
    return len(rows)


async def _claim(conn: asyncpg.Connection, job: str, tick: datetime, replica: str) -> int | None:
    value = await conn.fetchval(
        """INSERT INTO job_runs (job, tick, replica) VALUES ($1, $2, $3)
           ON CONFLICT (job, tick) WHERE outcome <> 'skipped' DO NOTHING RETURNING id""",
        job,
        tick,
        replica,
    )
    return None if value is None else int(value)


async def _finish(
    conn: asyncpg.Connection, run_id: int, outcome: Outcome, detail: str, facts: dict[str, Any]
) -> None:
    await conn.execute(
        """UPDATE job_runs SET outcome = $2, detail = $3, facts = $4,
               finished_at = greatest(clock_timestamp(), started_at)
           WHERE id = $1""",
        run_id,
        outcome.value,
        detail,
        facts,
    )


# --- reading the record -------------------------------------------------------------------


def _run_from_row(row: Any) -> JobRun:
    return JobRun(
        id=row["id"],
        job=row["job"],
        tick=row["tick"],
        replica=row["replica"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=Outcome(row["outcome"]),
        detail=row["detail"],
        facts=dict(row["facts"] or {}),
    )


async def runs(
    conn: asyncpg.Connection | asyncpg.Pool, job: str | None = None, *, limit: int = 100
) -> list[JobRun]:
    """The latest runs (of `job`, or of every job), newest first."""
    rows = await conn.fetch(
        """SELECT * FROM job_runs WHERE $1::text IS NULL OR job = $1
           ORDER BY started_at DESC, id DESC LIMIT $2""",
        job,
        limit,
    )
    return [_run_from_row(r) for r in rows]


async def last_full_reconciliation(conn: asyncpg.Connection | asyncpg.Pool) -> datetime | None:
    """When the latest full reconciliation run started, scheduled or run by an operator."""
    value = await conn.fetchval("SELECT max(started_at) FROM recon_runs WHERE full_run")
    return value if isinstance(value, datetime) else None


async def failures_since(
    conn: asyncpg.Connection | asyncpg.Pool, since: datetime
) -> dict[str, int]:
    """Failed runs per job since `since`."""
    rows = await conn.fetch(
        """SELECT job, count(*) AS n FROM job_runs
           WHERE outcome = 'failed' AND started_at >= $1 GROUP BY job ORDER BY job""",
        since,
    )
    return {r["job"]: int(r["n"]) for r in rows}


async def prune(conn: asyncpg.Connection | asyncpg.Pool, older_than: datetime) -> int:
    """Delete finished runs that started before `older_than`; how many went."""
    deleted = await conn.fetchval(
        """WITH gone AS (DELETE FROM job_runs
                         WHERE started_at < $1 AND outcome <> 'running' RETURNING 1)
           SELECT count(*) FROM gone""",
        older_than,
    )
    return int(deleted or 0)
