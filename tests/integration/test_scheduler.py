"""The scheduler across replicas: each tick of each job runs once, failed and killed runs are
retried at the next tick, every run is recorded in `job_runs`. Intervals are fractions of a
second, so every test takes a few seconds at most."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot import scheduler as sched
from bot.scheduler import Job, JobDeps, Scheduler, default_jobs
from core import adjustments, db, jobs
from core.adjustments import AdjustmentPolicy, new_request
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.jobs import RunResult
from core.services import Services
from localnet.server import start_localnet
from tests.e2e.facts import new_user
from tests.e2e.harness import enter_concurrently, running_chain, running_service
from tests.slack_fake import BOT_TOKEN, FakeSlack
from tests.support import ScriptedVerifier, build_services

pytestmark = pytest.mark.timeout(90)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAST = 0.5  # seconds between ticks


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, within: float = 10.0
) -> None:
    try:
        async with asyncio.timeout(within):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within}s: {what}") from None


async def job_runs(pool: asyncpg.Pool, job: str | None = None) -> list[jobs.JobRun]:
    return sorted(await jobs.runs(pool, job, limit=1000), key=lambda r: (r.tick, r.id))


def assert_once_per_tick(runs: list[jobs.JobRun]) -> None:
    ticks = Counter((r.job, r.tick) for r in runs if r.outcome is not jobs.Outcome.SKIPPED)
    assert ticks, "nothing ran"
    twice = {k: n for k, n in ticks.items() if n > 1}
    assert not twice, f"ran more than once: {twice}"


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop(grace=2.0)


async def test_two_schedulers_run_each_tick_of_each_job_once(database_url: str) -> None:
    runner, info = await start_localnet("127.0.0.1", 0)
    pools = [await db.create_pool(database_url, min_size=1, max_size=8) for _ in range(2)]
    executed: list[tuple[str, datetime]] = []

    def counting(replica: str) -> Callable[[], Awaitable[RunResult]]:
        async def work() -> RunResult:
            executed.append((replica, jobs.tick_of(datetime.now(UTC), FAST)))
            await asyncio.sleep(0.05)  # long enough for the other replica to try the tick
            return RunResult("counted")

        return work

    intervals = {
        f"{name}_interval_seconds": FAST
        for name in ("audit_seal", "recovery", "expire", "housekeeping")
    }
    schedulers = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for n, pool in enumerate(pools):
                svc = build_services(
                    pool, ScriptedVerifier(), recovery_min_age_seconds=0, **intervals
                )
                rpc = await stack.enter_async_context(SolanaRpc(info.rpc_url, max_retries=0))
                replica = f"replica-{n}"
                job_list = default_jobs(
                    svc, rpc, only=["audit_seal", "recovery", "expire_approvals", "housekeeping"]
                )
                job_list.append(Job("counting", FAST, counting(replica)))
                schedulers.append(
                    await stack.enter_async_context(
                        running(Scheduler(svc, job_list, replica=replica))
                    )
                )
            await asyncio.sleep(3.2)
    finally:
        runs = await job_runs(pools[0])
        for pool in pools:
            await pool.close()
        await runner.cleanup()

    assert_once_per_tick(runs)
    by_job = Counter(r.job for r in runs)
    assert set(by_job) == {"audit_seal", "recovery", "expire_approvals", "housekeeping", "counting"}
    assert all(n >= 4 for n in by_job.values()), by_job
    assert {r.outcome for r in runs} == {jobs.Outcome.OK}, [r for r in runs if r.outcome != "ok"]
    assert {r.replica for r in runs} <= {"replica-0", "replica-1"}
    # The work itself ran once per tick, not only its bookkeeping.
    counted = Counter(tick for _, tick in executed)
    assert max(counted.values()) == 1
    assert len(counted) == by_job["counting"]
    # Both replicas fired every tick: what one ran, the other skipped.
    skipped = [
        s.services.metrics.job_runs.labels("counting", "skipped")._value.get() for s in schedulers
    ]
    assert sum(skipped) >= by_job["counting"] - 1


async def test_a_failed_run_is_recorded_and_retried_at_the_next_tick(pool: asyncpg.Pool) -> None:
    calls = 0

    async def flaky() -> RunResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return RunResult("fine", {"call": calls})

    svc = build_services(pool, ScriptedVerifier())
    async with running(Scheduler(svc, [Job("flaky", FAST, flaky)])):
        await eventually(
            lambda: _count(pool, "flaky", "ok", at_least=1), "a successful run after the failure"
        )
    runs = await job_runs(pool, "flaky")
    assert runs[0].outcome is jobs.Outcome.FAILED
    assert runs[0].detail == "RuntimeError: boom"
    assert runs[0].finished_at is not None
    assert runs[1].outcome is jobs.Outcome.OK
    assert runs[1].facts == {"call": 2}
    assert runs[1].tick == runs[0].tick + timedelta(seconds=FAST)
    assert svc.metrics.job_runs.labels("flaky", "failed")._value.get() == 1


async def _count(pool: asyncpg.Pool, job: str, outcome: str, *, at_least: int) -> bool:
    n = await pool.fetchval(
        "SELECT count(*) FROM job_runs WHERE job = $1 AND outcome = $2", job, outcome
    )
    return int(n) >= at_least


async def _lock_held(pool: asyncpg.Pool, job: str) -> bool:
    return bool(
        await pool.fetchval(
            """SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory'
               AND classid = $1 AND objid = $2 AND granted""",
            jobs.JOB_LOCK_CLASS,
            jobs.lock_key(job),
        )
    )


async def test_a_killed_run_is_retried_at_the_next_tick(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    out = (tmp_path / "child.out").open("wb")
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.scheduler_child", database_url, "slow", str(FAST)),
        cwd=PROJECT_ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        await eventually(
            lambda: _count(pool, "slow", "running", at_least=1), "the child's run", within=20
        )
        ran: list[datetime] = []

        async def quick() -> RunResult:
            ran.append(datetime.now(UTC))
            return RunResult("done")

        svc = build_services(pool, ScriptedVerifier())
        async with running(Scheduler(svc, [Job("slow", FAST, quick)], replica="survivor")):
            # While the child holds the job, this replica skips its ticks.
            await asyncio.sleep(3 * FAST)
            assert ran == []
            assert svc.metrics.job_runs.labels("slow", "skipped")._value.get() >= 2

            child.send_signal(signal.SIGKILL)
            async with asyncio.timeout(10):
                await child.wait()
            await eventually(lambda: _not(_lock_held(pool, "slow")), "the lock released")
            await eventually(lambda: _count(pool, "slow", "ok", at_least=1), "the retry")
    finally:
        if child.returncode is None:
            child.kill()
            async with asyncio.timeout(10):
                await child.wait()
        out.close()

    dead, retried = (await job_runs(pool, "slow"))[:2]
    assert dead.replica.endswith(f":{child.pid}")
    assert dead.outcome is jobs.Outcome.FAILED
    assert dead.detail.startswith("abandoned")
    assert retried.replica == "survivor"
    assert retried.outcome is jobs.Outcome.OK
    assert retried.tick > dead.tick
    assert len(ran) >= 1


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_stopping_cancels_a_run_in_flight_and_records_it(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    async def hang() -> RunResult:
        started.set()
        await asyncio.Event().wait()
        return RunResult("never")

    scheduler = Scheduler(build_services(pool, ScriptedVerifier()), [Job("hang", FAST, hang)])
    scheduler.start()
    async with asyncio.timeout(5):
        await started.wait()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        await scheduler.stop(grace=0.2)

    (run,) = await job_runs(pool, "hang")
    assert run.outcome is jobs.Outcome.FAILED
    assert run.detail == "cancelled: the service stopped mid-run"
    assert not await _lock_held(pool, "hang")
    # a clean stop logs no error (APScheduler logs a job that raised, cancellation included)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("cancelled at shutdown" in r.getMessage() for r in caplog.records)


async def test_expire_approvals_closes_requests_and_their_threads(pool: asyncpg.Pool) -> None:
    fake = FakeSlack()
    await fake.start()
    try:
        svc: Services = build_services(
            pool, ScriptedVerifier(), slack_bot_token=BOT_TOKEN, slack_api_url=fake.api_url()
        )
        policy = AdjustmentPolicy(frozenset(), two_approvals_above=100, ttl=timedelta(hours=1))
        async with pool.acquire() as conn:
            adj = await adjustments.create(
                conn,
                Actor("op", "slack"),
                new_request(
                    user_id="dora",
                    credits=5,
                    reason="goodwill",
                    policy=policy,
                    now=datetime.now(UTC) - timedelta(hours=2),
                ),
            )
        await adjustments.set_thread(pool, adj.id, "C_APPROVALS", "123.000001")

        result = await sched.expire_approvals(JobDeps(svc, None, sched.slack_client(svc)))

        assert result.facts == {"expired": [adj.id], "slack_failures": 0}
        (note,) = fake.of("chat.postMessage")
        assert (note["channel"], note["thread_ts"]) == ("C_APPROVALS", "123.000001")
        assert "expired" in note["text"]
        (update,) = fake.of("chat.update")
        assert update["ts"] == "123.000001"
        assert "adjust_approve" not in str(update["blocks"])
        audit = await pool.fetchrow(
            "SELECT actor, source FROM audit_log WHERE action = $1", "adjustment.expire"
        )
        assert audit is not None
        assert (audit["actor"], audit["source"]) == ("scheduler", "scheduler")
    finally:
        await fake.close()


async def test_housekeeping_prunes_old_runs(pool: asyncpg.Pool) -> None:
    await pool.execute(
        """INSERT INTO job_runs (job, tick, replica, started_at, finished_at, outcome)
           VALUES ('old', now() - interval '30 days', 'r', now() - interval '30 days',
                   now() - interval '30 days', 'ok'),
                  ('new', now(), 'r', now(), now(), 'ok')"""
    )
    result = await sched.housekeeping(JobDeps(build_services(pool, ScriptedVerifier()), None, None))
    assert result.facts == {"pruned": 1}
    assert [r.job for r in await jobs.runs(pool)] == ["new"]


# --- two real `payops serve` processes on one database --------------------------------------


async def test_two_service_processes_run_each_job_once(database_url: str, tmp_path: Path) -> None:
    settings = {
        "PAYOPS_SCHEDULER_ENABLED": "true",
        "PAYOPS_AUDIT_SEAL_INTERVAL_SECONDS": str(FAST),
        "PAYOPS_RECOVERY_INTERVAL_SECONDS": str(FAST),
        "PAYOPS_RECOVERY_MIN_AGE_SECONDS": "0",
        "PAYOPS_EXPIRE_INTERVAL_SECONDS": str(FAST),
        "PAYOPS_RECONCILE_INTERVAL_SECONDS": "1",
        "PAYOPS_HOUSEKEEPING_INTERVAL_SECONDS": "1",
        "PAYOPS_SUMMARY_INTERVAL_SECONDS": "1",
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        running_chain(tmp_path / "chain", http) as chain,
        contextlib.AsyncExitStack() as stack,
    ):
        services = await enter_concurrently(
            stack,
            [
                running_service(chain, database_url, tmp_path / f"service-{n}", http, **settings)
                for n in range(2)
            ],
        )
        # A payment nobody verifies: the recovery sweep of one replica credits it, once.
        user = new_user("unverified")
        intent = await services[0].create_intent(user, credits=3)
        signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
        await chain.finalized(signature)
        pool = services[0].pool

        async def credited() -> bool:
            return (
                await pool.fetchval(
                    "SELECT status FROM purchase_intents WHERE id = $1::uuid", intent["id"]
                )
                == "CONFIRMED"
            )

        await eventually(credited, "the recovery sweep credited the payment", within=15)
        await asyncio.sleep(2.5)
        metrics = [await (await http.get(s.url + "/metrics")).text() for s in services]
        pids = {s.proc.pid for s in services}
        runs = await job_runs(pool)
        purchases = await pool.fetchval(
            "SELECT count(*) FROM ledger_transactions WHERE intent_id = $1::uuid", intent["id"]
        )
        balance = (await services[1].credits(user))["balance"]

    assert_once_per_tick(runs)
    assert (purchases, balance) == (1, 3)
    by_job = Counter(r.job for r in runs)
    assert set(by_job) == set(sched.JOB_FUNCTIONS), by_job
    for job in ("audit_seal", "recovery", "expire_approvals"):
        assert by_job[job] >= 5, by_job
    for job in ("reconcile", "daily_summary", "housekeeping"):
        assert by_job[job] >= 2, by_job
    assert {int(r.replica.rsplit(":", 1)[1]) for r in runs} <= pids
    host = socket.gethostname()
    assert all(r.replica.startswith(f"{host}:") for r in runs)
    # Both took part, running ticks or standing down; at least once one stood down for the
    # other. (Which one wins each tick is a race, and a loaded process may fire a tick late or
    # not at all, so "each skipped at least once" is not something the design promises.)
    for text in metrics:
        assert 'payops_job_runs_total{job="audit_seal",outcome=' in text
    assert any('payops_job_runs_total{job="audit_seal",outcome="skipped"}' in t for t in metrics)
    finished = [r for r in runs if r.outcome is not jobs.Outcome.RUNNING]
    failed = [(r.job, r.detail) for r in finished if r.outcome is not jobs.Outcome.OK]
    assert not failed
    assert any(r.facts.get("full") is False for r in runs if r.job == "reconcile")
