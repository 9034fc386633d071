"""The scheduled jobs, run by APScheduler 3 (`AsyncIOScheduler`) inside the service process.

    job               every (setting, default)                 what
    reconcile         PAYOPS_RECONCILE_INTERVAL_SECONDS (300)  an incremental
                      `run_reconciliation` (what changed since the last run, and the open
                      findings); a full one when the last full one is
                      PAYOPS_RECONCILE_FULL_EVERY_SECONDS old; then the drift alerts
    recovery          PAYOPS_RECOVERY_INTERVAL_SECONDS (60)    the recovery sweep
    expire_approvals  PAYOPS_EXPIRE_INTERVAL_SECONDS (60)      adjustment requests past their
                      expiry -> EXPIRED, noted in their approval thread
    audit_seal        PAYOPS_AUDIT_SEAL_INTERVAL_SECONDS (2)   chain new audit rows
    daily_summary     PAYOPS_SUMMARY_INTERVAL_SECONDS (86400, at midnight UTC)  the summary,
                      to the alerts channel
    housekeeping      PAYOPS_HOUSEKEEPING_INTERVAL_SECONDS (3600)  delete `job_runs` older
                      than PAYOPS_JOB_RUNS_RETENTION_DAYS

Every replica runs this scheduler (unless PAYOPS_SCHEDULER_ENABLED=false); each tick of each
job runs on one replica, recorded in `job_runs` (core/jobs.py tells how). The scheduler starts
and stops with the aiohttp app (`cleanup_ctx`); stopping lets runs in flight finish for a
few seconds, then cancels them (recorded as failed; the next tick runs the job again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from slack_sdk.web.async_client import AsyncWebClient

from bot import alerts
from bot.commands.adjust import adjustment_blocks, adjustment_text
from bot.replies import slack_text
from core import adjustments, audit, jobs, purchases, watch, webhooks
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.daily import daily_figures
from core.jobs import Ran, RunResult
from core.services import Services

log = logging.getLogger("payops.scheduler")

SCHEDULER_ACTOR = Actor("scheduler", "scheduler")
RECONCILE_ACTOR = Actor("reconcile", "scheduler")
STOP_GRACE_SECONDS = 10.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # ticks are multiples of the interval since then


@dataclass(frozen=True)
class Job:
    name: str
    interval: float  # seconds
    work: Callable[[], Awaitable[RunResult]]


@dataclass(frozen=True)
class JobDeps:
    services: Services
    rpc: SolanaRpc | None
    slack: AsyncWebClient | None


class Scheduler:
    """APScheduler on the running loop, each tick going through `jobs.run_once`."""

    def __init__(
        self, services: Services, job_list: Sequence[Job], *, replica: str | None = None
    ) -> None:
        self.services = services
        self.jobs = list(job_list)
        self.replica = replica or jobs.replica_id()
        self._inflight: set[asyncio.Task[object]] = set()
        self._stopping = False  # set by stop(): a cancelled tick is then expected
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for job in self.jobs:
            self._aps.add_job(
                self.tick,
                IntervalTrigger(seconds=job.interval, start_date=_EPOCH, timezone=UTC),
                args=[job],
                id=job.name,
                name=job.name,
            )

    def start(self) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            # "Running job ..." twice a tick for every job is noise; warnings still show.
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._aps.start()
        log.info(
            "scheduler started on %s: %s",
            self.replica,
            ", ".join(f"{j.name} every {j.interval:g}s" for j in self.jobs),
        )

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """No new ticks; runs in flight get `grace` seconds, then are cancelled."""
        if not self._aps.running:
            return
        self._stopping = True
        self._aps.pause()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)
        left = set(self._inflight)
        self._aps.shutdown(wait=False)  # cancels what is left, on the loop's next turn
        if left:
            await asyncio.sleep(0)
            await asyncio.wait(left, timeout=2.0)
        log.info("scheduler stopped on %s", self.replica)

    async def tick(self, job: Job) -> Ran | None:
        """One tick of `job` on this replica (what APScheduler calls)."""
        tick = jobs.tick_of(datetime.now(UTC), job.interval)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        started = time.monotonic()
        metrics = self.services.metrics
        try:
            ran = await jobs.run_once(self.services.pool, job.name, tick, self.replica, job.work)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled it after its grace; run_once recorded the run as failed. Ending
            # here rather than raising keeps APScheduler from logging a stop as an error.
            log.info("job %s: tick %s cancelled at shutdown", job.name, tick.isoformat())
            metrics.job_runs.labels(job.name, "failed").inc()
            return None
        except Exception as exc:  # the database itself is unreachable: nothing was recorded
            log.warning("job %s: tick %s not run: %s", job.name, tick.isoformat(), exc)
            metrics.job_runs.labels(job.name, "failed").inc()
            return None
        finally:
            if task is not None:
                self._inflight.discard(task)
        metrics.job_runs.labels(job.name, ran.outcome.value).inc()
        if ran.outcome is not jobs.Outcome.SKIPPED:
            metrics.job_seconds.labels(job.name).observe(time.monotonic() - started)
        return ran


# --- the jobs ------------------------------------------------------------------------------


async def reconcile(deps: JobDeps) -> RunResult:
    """An incremental reconciliation run, or a full one when the last is old enough."""
    from core.recon import RpcChainLookup, run_reconciliation

    svc, s = deps.services, deps.services.settings
    now = svc.clock()
    last_full = await jobs.last_full_reconciliation(svc.pool)
    full = last_full is None or now - last_full >= timedelta(seconds=s.reconcile_full_every_seconds)
    run = await run_reconciliation(
        svc.pool,
        None if deps.rpc is None else RpcChainLookup(deps.rpc),
        now=now,
        actor=RECONCILE_ACTOR,
        pending_sla=timedelta(seconds=s.pending_sla_seconds),
        expiry_grace=svc.expiry_grace,
        payment=svc.payment,
        full=full,
        # The smoke test's known-good payment reaches the treasury and never credits.
        ignore_signatures=(s.smoke_signature,) if s.smoke_signature else (),
    )
    svc.metrics.set_recon(
        drift_credits=run.drift_credits,
        drift_tokens=run.drift_tokens,
        open_by_kind=dict(Counter(f.kind for f in run.findings)),
        at=run.finished_at.timestamp(),
    )
    published = await alerts.publish_run(svc, deps.slack, run)
    detail = (
        f"run #{run.id} ({'full' if full else 'incremental'}): {len(run.findings)} open, "
        f"{len(run.new_findings)} new, {len(run.resolved_findings)} resolved, drift "
        f"{run.drift_credits:+d} credits / {run.drift_tokens:+d} tokens; {published.summary()}"
    )
    facts = {
        "full": full,
        "run_id": run.id,
        "open": len(run.findings),
        "new": len(run.new_findings),
        "resolved": len(run.resolved_findings),
        "drift_credits": run.drift_credits,
        "drift_tokens": run.drift_tokens,
        "chain_checked": run.chain_checked,
        "announced": published.announced,
        "escalated": published.escalated,
        "resolution_posts": published.resolved,
    }
    return RunResult(detail, facts)


async def recover(deps: JobDeps) -> RunResult:
    """The recovery sweep; a sweep stopped by the RPC is a failed run (it did not do its work)."""
    if deps.rpc is None:
        return RunResult("no Solana RPC client configured", ok=False)
    svc = deps.services
    report = await purchases.sweep(svc, deps.rpc, now=svc.clock())
    ok = report.stopped is None or report.stopped.startswith("verify gate")
    return RunResult(report.summary(), report.facts(), ok=ok)


async def expire_approvals(deps: JobDeps) -> RunResult:
    """Adjustment requests past their expiry -> EXPIRED; their approval thread says so."""
    svc = deps.services
    async with svc.pool.acquire() as conn:
        expired = await adjustments.expire_due(conn, svc.clock(), actor=SCHEDULER_ACTOR)
    failed = 0
    for adj in expired:
        if deps.slack is None or not (adj.slack_channel and adj.slack_thread_ts):
            continue
        try:
            await deps.slack.chat_postMessage(
                channel=adj.slack_channel,
                thread_ts=adj.slack_thread_ts,
                text=f"Adjustment #{adj.id} expired without a decision; request it again if "
                "it is still needed.",
            )
            await deps.slack.chat_update(
                channel=adj.slack_channel,
                ts=adj.slack_thread_ts,
                text=adjustment_text(adj, []),
                blocks=adjustment_blocks(adj, [], buttons=False),
            )
        except Exception as exc:
            failed += 1
            log.warning("adjustment %s expired; its Slack thread was not updated: %s", adj.id, exc)
    detail = f"expired {len(expired)} adjustment request(s)"
    if failed:
        detail += f"; {failed} Slack thread update(s) failed"
    return RunResult(detail, {"expired": [a.id for a in expired], "slack_failures": failed})


async def seal_audit(deps: JobDeps) -> RunResult:
    sealed = await audit.seal(deps.services.pool)
    return RunResult(f"sealed {sealed} audit row(s)", {"sealed": sealed})


async def daily_summary(deps: JobDeps) -> RunResult:
    """The last day's figures and the latest reconciliation, to the alerts channel."""
    from core.recon import latest_run

    svc = deps.services
    now = svc.clock()
    figures = await daily_figures(
        svc.pool,
        since=now - timedelta(days=1),
        until=now,
        pending_sla=timedelta(seconds=svc.settings.pending_sla_seconds),
    )
    posted = await alerts.post_summary(svc, deps.slack, figures, await latest_run(svc.pool))
    return RunResult(
        "summary posted" if posted else "summary not posted: Slack alerts not configured",
        {"posted": posted, "intents_created": figures.intents_created},
    )


async def housekeeping(deps: JobDeps) -> RunResult:
    svc = deps.services
    days = svc.settings.job_runs_retention_days
    pruned = await jobs.prune(svc.pool, svc.clock() - timedelta(days=days))
    return RunResult(f"pruned {pruned} job run(s) older than {days} days", {"pruned": pruned})


JOB_FUNCTIONS: dict[str, tuple[str, Callable[[JobDeps], Awaitable[RunResult]]]] = {
    "reconcile": ("reconcile_interval_seconds", reconcile),
    "recovery": ("recovery_interval_seconds", recover),
    "expire_approvals": ("expire_interval_seconds", expire_approvals),
    "audit_seal": ("audit_seal_interval_seconds", seal_audit),
    "daily_summary": ("summary_interval_seconds", daily_summary),
    "housekeeping": ("housekeeping_interval_seconds", housekeeping),
}


def default_jobs(
    services: Services,
    rpc: SolanaRpc | None,
    slack: AsyncWebClient | None = None,
    *,
    only: Sequence[str] | None = None,
) -> list[Job]:
    """Every job (or those named in `only`) with its configured interval."""
    deps = JobDeps(services, rpc, slack)
    chosen = JOB_FUNCTIONS if only is None else {n: JOB_FUNCTIONS[n] for n in only}

    def bind(fn: Callable[[JobDeps], Awaitable[RunResult]]) -> Callable[[], Awaitable[RunResult]]:
        return lambda: fn(deps)

    return [
        Job(name, float(getattr(services.settings, setting)), bind(fn))
        for name, (setting, fn) in chosen.items()
    ]


def slack_client(services: Services) -> AsyncWebClient | None:
    if services.settings.slack_bot_token is None:
        return None
    from bot.slack_app import web_client

    return web_client(services)


def scheduler_context(
    services: Services, rpc: SolanaRpc | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """For `app.cleanup_ctx`: the scheduler runs while the app does."""

    async def run_scheduler(app: web.Application) -> AsyncIterator[None]:
        scheduler = Scheduler(services, default_jobs(services, rpc, slack_client(services)))
        scheduler.start()
        stop = asyncio.Event()
        streams = await _start_streams(services, rpc, stop)
        try:
            yield
        finally:
            stop.set()
            for task in streams:
                await _stop_stream(task)
            await scheduler.stop()

    return run_scheduler


async def _start_streams(
    services: Services, rpc: SolanaRpc | None, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The work that follows a stream rather than ticks, each on one replica at a time: the
    treasury watcher, webhook delivery and the incident feed (timelines, App Home)."""
    from bot import home, incident_feed

    tasks = [
        asyncio.create_task(
            incident_feed.run(services, slack_client(services), stop, home.refresh_recent),
            name="incident_feed",
        )
    ]
    if rpc is not None and services.settings.watch_enabled:
        tasks.append(asyncio.create_task(watch.run(services, rpc, stop), name="watcher"))
    async with services.pool.acquire() as conn:
        await webhooks.sync_endpoints(conn, services.settings.webhook_url)
    sender = webhooks.sender_for(services)
    if sender is not None:
        slack = slack_client(services)

        async def announce(dead: list[webhooks.Delivery]) -> None:
            await _announce_dead_webhooks(services, slack, dead)

        tasks.append(
            asyncio.create_task(webhooks.run(services, sender, stop, announce), name="webhooks")
        )
    return tasks


async def _stop_stream(task: asyncio.Task[None]) -> None:
    """A stream ends its round in flight (a round leaves nothing half-written), or is
    cancelled after the jobs' grace."""
    done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _announce_dead_webhooks(
    svc: Services, slack: AsyncWebClient | None, dead: list[webhooks.Delivery]
) -> None:
    """Events given up on, to the alerts channel: someone must look at the receiver."""
    channel = alerts.alerts_target(svc, slack)
    if channel is None or slack is None:
        log.warning("%d webhook deliveries given up; Slack alerts are not configured", len(dead))
        return
    lines = [f"• `{d.event.id}` {d.event.type} → {d.endpoint}" for d in dead[:10]]
    text = (
        f":warning: {len(dead)} webhook deliveries given up after "
        f"{svc.settings.webhook_retry_seconds // 3600} h of retries:\n"
        + "\n".join(lines)
        + "\nDeliver again: `payops ops webhooks retry <event id>`."
    )
    try:
        await slack.chat_postMessage(channel=channel, text=slack_text(text))
    except Exception as exc:  # the alert is best effort; the deliveries stay listed as dead
        log.warning("could not announce dead webhooks: %s", exc)
