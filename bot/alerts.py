"""Drift alerts: each reconciliation finding announced once, escalated once, resolved once.

After every scheduled reconciliation run, `publish_run` (in this order):

1. records the findings the run saw resolved (`resolved_findings`; the pseudo-finding
   `drift` when a full or incremental run shows zero drift — a run over a window of intents
   cannot prove that);
2. announces, in one message to PAYOPS_SLACK_ALERTS_CHANNEL, the run's open findings that
   were not announced yet — the new ones, and any whose earlier post failed — plus non-zero
   drift: what, how many, the top examples with "Open ticket" / "Run triage" buttons.
   Info-level findings are not announced (the daily summary counts them);
3. escalates, once, the announced findings still open PAYOPS_ALERT_ESCALATE_AFTER_SECONDS
   after their announcement: a new message that mentions PAYOPS_SLACK_MANAGERS (0 turns
   escalation off);
4. posts each resolution once, as a reply in the thread of the original announcement.

`alert_posts` (core/recon.py) is the record that makes each of these happen once, across
runs and replicas. Without Slack (no bot token or alerts channel) nothing is posted or
recorded, so the findings are announced once Slack is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from slack_sdk.web.async_client import AsyncWebClient

from bot import alert_blocks
from bot.alert_blocks import (
    DRIFT_FINGERPRINT,
)
from core import recon
from core.daily import DailyFigures
from core.recon import DRIFT_KIND, AlertItem, AlertPost, Finding, ReconRun, Severity
from core.services import Services

log = logging.getLogger("payops.alerts")


def _some(values: Sequence[str], label: str, shown: int = 3) -> str | None:
    if not values:
        return None
    more = f" (+{len(values) - shown})" if len(values) > shown else ""
    return f"{label}: " + ", ".join(f"`{v}`" for v in values[:shown]) + more


def alert_item(finding: Finding) -> AlertItem:
    """A finding as an alert states it: its detail, amounts and who/what it touches."""
    parts = [
        f"credits {finding.credits:+d}" if finding.credits else None,
        f"tokens {finding.tokens:+d}" if finding.tokens else None,
        _some(finding.user_ids, "users"),
        _some(finding.signatures, "tx", 2),
        _some(finding.intent_ids, "intents", 2),
    ]
    facts = " · ".join(p for p in parts if p)
    summary = finding.detail + (f"\n{facts}" if facts else "")
    target = next(iter((*finding.user_ids, *finding.signatures, *finding.intent_ids)), None)
    return AlertItem(finding.fingerprint, finding.kind, finding.severity, summary[:1500], target)


def drift_item(run: ReconRun) -> AlertItem:
    return AlertItem(
        DRIFT_FINGERPRINT,
        DRIFT_KIND,
        Severity.CRITICAL,
        f"expected minus applied: {run.drift_credits:+d} credits, {run.drift_tokens:+d} tokens "
        f"(run #{run.id}, {alert_blocks.scope(run)})",
    )


def has_drift(run: ReconRun) -> bool:
    return run.drift_credits != 0 or run.drift_tokens != 0


@dataclass(frozen=True, slots=True)
class Published:
    announced: int = 0
    escalated: int = 0
    resolved: int = 0
    skipped: str | None = None

    def summary(self) -> str:
        if self.skipped:
            return f"alerts not posted: {self.skipped}"
        return (
            f"alerts: {self.announced} announced, {self.escalated} escalated, "
            f"{self.resolved} resolved"
        )


def alerts_target(svc: Services, client: AsyncWebClient | None) -> str | None:
    """The alerts channel, when Slack is configured to post there."""
    if client is None or svc.settings.slack_bot_token is None:
        return None
    return svc.settings.slack_alerts_channel


async def publish_run(svc: Services, client: AsyncWebClient | None, run: ReconRun) -> Published:
    """Post what a reconciliation run changed, each thing once (module docstring)."""
    channel = alerts_target(svc, client)
    if channel is None or client is None:
        return Published(skipped="no Slack bot token or PAYOPS_SLACK_ALERTS_CHANNEL")
    now = svc.clock()
    pool = svc.pool
    gone = [f.fingerprint for f in run.resolved_findings]
    if not has_drift(run) and (run.full or run.window_start is None):
        gone.append(DRIFT_FINGERPRINT)
    await recon.mark_resolved(pool, gone, now)

    seen: dict[str, AlertItem] = {}
    for finding in (*run.findings, *run.new_findings):
        if finding.severity is not Severity.INFO:
            seen.setdefault(finding.fingerprint, alert_item(finding))
    if has_drift(run):
        seen[DRIFT_FINGERPRINT] = drift_item(run)
    announced = await _announce(client, pool, channel, list(seen.values()), run, now)
    escalated = await _escalate(svc, client, now)
    resolved = await _resolve(client, pool, run, now)
    return Published(announced, escalated, resolved)


async def _announce(
    client: AsyncWebClient,
    pool: asyncpg.Pool,
    channel: str,
    items: list[AlertItem],
    run: ReconRun,
    now: datetime,
) -> int:
    claimed = await recon.claim_new(pool, items, channel, now)
    if not claimed:
        return 0
    message = alert_blocks.announcement(claimed, run)
    fingerprints = [i.fingerprint for i in claimed]
    try:
        posted = await client.chat_postMessage(
            channel=channel, text=message.text, blocks=message.blocks
        )
    except BaseException:
        await recon.release_new(pool, fingerprints)
        raise
    await recon.set_posted(pool, fingerprints, str(posted["channel"]), str(posted["ts"]))
    return len(claimed)


async def _escalate(svc: Services, client: AsyncWebClient, now: datetime) -> int:
    after = timedelta(seconds=svc.settings.alert_escalate_after_seconds)
    channel = svc.settings.slack_alerts_channel
    if not after or channel is None:
        return 0
    due = await recon.claim_escalations(svc.pool, now - after, now)
    if not due:
        return 0
    fingerprints = [p.item.fingerprint for p in due]
    message = alert_blocks.escalation(due, svc.settings.slack_managers, after, now)
    try:
        posted = await client.chat_postMessage(
            channel=channel, text=message.text, blocks=message.blocks
        )
    except BaseException:
        await recon.release_escalations(svc.pool, fingerprints)
        raise
    await recon.set_escalated(svc.pool, fingerprints, str(posted["ts"]))
    return len(due)


async def _resolve(client: AsyncWebClient, pool: asyncpg.Pool, run: ReconRun, now: datetime) -> int:
    due = await recon.claim_resolutions(pool, now)
    threads: dict[tuple[str, str], list[AlertPost]] = {}
    for post in due:
        assert post.ts is not None
        threads.setdefault((post.channel, post.ts), []).append(post)
    groups = list(threads.items())
    for done, ((channel, ts), posts) in enumerate(groups):
        message = alert_blocks.resolution(posts, run)
        try:
            await client.chat_postMessage(
                channel=channel, thread_ts=ts, text=message.text, blocks=message.blocks
            )
        except BaseException:
            # This thread and the ones not reached yet: the next run posts them.
            rest = [p.item.fingerprint for _, ps in groups[done:] for p in ps]
            await recon.release_resolutions(pool, rest)
            raise
    return len(due)


async def post_summary(
    svc: Services,
    client: AsyncWebClient | None,
    figures: DailyFigures,
    run: ReconRun | None,
) -> bool:
    """Post the daily summary to the alerts channel; False when Slack is not configured."""
    channel = alerts_target(svc, client)
    if channel is None or client is None:
        return False
    open_alerts = len(await recon.open_posts(svc.pool))
    message = alert_blocks.daily_summary(figures, run, open_alerts)
    await client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
    return True
