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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import alert_blocks
from bot.alert_blocks import (
    DRIFT_FINGERPRINT,
    OPEN_TICKET,
    RUN_TRIAGE,
    SHORT,
    RunFacts,
    parse_ticket_value,
)
from bot.authz import Roles
from bot.commands import triage as cmd_triage
from bot.context import OpsContext
from core import recon
from core import recon as recon_tickets
from core.daily import DailyFigures
from core.errors import PayopsError
from core.recon import AlertItem, AlertPost
from core.services import Services

log = logging.getLogger("payops.alerts")

TICKET_COMMAND = "/pay-recon ticket open"


class FindingLike(Protocol):
    """What the alerts read of a reconciliation finding (`core.recon.Finding`)."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def user_ids(self) -> tuple[str, ...]: ...
    @property
    def signatures(self) -> tuple[str, ...]: ...
    @property
    def intent_ids(self) -> tuple[str, ...]: ...
    @property
    def credits(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def detail(self) -> str: ...


class RunLike(Protocol):
    """What the alerts read of a reconciliation run (`core.recon.ReconRun`)."""

    @property
    def id(self) -> int: ...
    @property
    def full(self) -> bool: ...
    @property
    def window_start(self) -> datetime | None: ...
    @property
    def window_end(self) -> datetime: ...
    @property
    def findings(self) -> Sequence[FindingLike]: ...
    @property
    def new_findings(self) -> Sequence[FindingLike]: ...
    @property
    def resolved_findings(self) -> Sequence[FindingLike]: ...
    @property
    def drift_credits(self) -> int: ...
    @property
    def drift_tokens(self) -> int: ...
    @property
    def zero_drift(self) -> bool: ...
    @property
    def chain_checked(self) -> bool: ...


def _some(values: Sequence[str], label: str, shown: int = 3) -> str | None:
    if not values:
        return None
    more = f" (+{len(values) - shown})" if len(values) > shown else ""
    return f"{label}: " + ", ".join(f"`{v}`" for v in values[:shown]) + more


def alert_item(finding: FindingLike) -> AlertItem:
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


def drift_item(run: RunLike) -> AlertItem:
    return AlertItem(
        DRIFT_FINGERPRINT,
        "drift",
        "critical",
        f"expected minus applied: {run.drift_credits:+d} credits, {run.drift_tokens:+d} tokens "
        f"(run #{run.id}, {run_facts(run).scope})",
    )


def has_drift(run: RunLike) -> bool:
    return run.drift_credits != 0 or run.drift_tokens != 0


def run_facts(run: RunLike) -> RunFacts:
    return RunFacts(
        run_id=run.id,
        full=run.full,
        window_start=run.window_start,
        window_end=run.window_end,
        drift_credits=run.drift_credits,
        drift_tokens=run.drift_tokens,
        open_findings=len(run.findings),
        chain_checked=run.chain_checked,
        zero_drift=run.zero_drift,
    )


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


async def publish_run(svc: Services, client: AsyncWebClient | None, run: RunLike) -> Published:
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
        if finding.severity != "info":
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
    run: RunLike,
    now: datetime,
) -> int:
    claimed = await recon.claim_new(pool, items, channel, now)
    if not claimed:
        return 0
    message = alert_blocks.announcement(claimed, run_facts(run))
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


async def _resolve(client: AsyncWebClient, pool: asyncpg.Pool, run: RunLike, now: datetime) -> int:
    due = await recon.claim_resolutions(pool, now)
    threads: dict[tuple[str, str], list[AlertPost]] = {}
    for post in due:
        assert post.ts is not None
        threads.setdefault((post.channel, post.ts), []).append(post)
    groups = list(threads.items())
    for done, ((channel, ts), posts) in enumerate(groups):
        message = alert_blocks.resolution(posts, run_facts(run))
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
    run: RunLike | None,
) -> bool:
    """Post the daily summary to the alerts channel; False when Slack is not configured."""
    channel = alerts_target(svc, client)
    if channel is None or client is None:
        return False
    open_alerts = len(await recon.open_posts(svc.pool))
    message = alert_blocks.daily_summary(
        figures, None if run is None else run_facts(run), open_alerts
    )
    await client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
    return True


# --- the buttons ---------------------------------------------------------------------------


def register_alert_actions(
    app: AsyncApp, services: Services, roles: Roles, context_for: Callable[[str], OpsContext]
) -> None:
    """The alert buttons: "Open ticket" (`recon_open_ticket`), "Run triage" (`recon_triage`)."""

    async def refuse(respond: Any, message: str) -> None:
        await respond(
            text=f":no_entry: {message}", response_type="ephemeral", replace_original=False
        )

    @app.action(OPEN_TICKET)
    async def open_ticket(
        ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any
    ) -> None:
        await ack()
        user = body.get("user", {}).get("id", "")
        ctx = context_for(user)
        action = (body.get("actions") or [{}])[0]
        fingerprints = parse_ticket_value(str(action.get("value", "")))
        message_ts = str((body.get("message") or {}).get("ts") or "")
        try:
            await roles.require_oncall(user)
            # The button must belong to the alert it was clicked on: a forged value naming
            # other findings is refused.
            known = {p.item.fingerprint for p in await recon.of_message(services.pool, message_ts)}
            if not fingerprints or not set(fingerprints) <= known:
                raise PayopsError(
                    "this button does not belong to that alert", code="invalid_action"
                )
            async with services.pool.acquire() as conn:
                ticket = await recon_tickets.open_ticket(
                    conn, ctx.actor, fingerprints, now=services.clock(), note="from a drift alert"
                )
        except PayopsError as exc:
            await refuse(respond, exc.message)
            return
        except Exception:
            log.exception(
                "opening a ticket from an alert failed", extra={"request_id": ctx.actor.request_id}
            )
            await refuse(
                respond,
                f"the ticket could not be opened (request id {ctx.actor.request_id}); run "
                f"`{TICKET_COMMAND} {' '.join(fp[:SHORT] for fp in fingerprints)}` instead",
            )
            return
        ref = recon_tickets.ticket_ref(ticket.id)
        text = f"<@{user}> opened {ref} for {len(ticket.findings)} finding(s)"
        channel = (body.get("channel") or {}).get("id")
        if channel and message_ts:
            await client.chat_postMessage(channel=channel, thread_ts=message_ts, text=text)
        else:
            await respond(text=text, response_type="ephemeral", replace_original=False)

    @app.action(RUN_TRIAGE)
    async def run_triage(
        ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any
    ) -> None:
        await ack()
        user = body.get("user", {}).get("id", "")
        ctx = context_for(user)
        target = str(((body.get("actions") or [{}])[0]).get("value", "")).strip()
        try:
            await roles.require_oncall(user)
            if not target:
                raise PayopsError("this button names nothing to triage", code="invalid_action")
            reply = await cmd_triage.run(ctx, [target])
        except PayopsError as exc:
            await refuse(respond, exc.message)
            return
        except Exception:
            log.exception("triage from an alert failed", extra={"request_id": ctx.actor.request_id})
            await refuse(respond, f"triage failed unexpectedly (request id {ctx.actor.request_id})")
            return
        channel = (body.get("channel") or {}).get("id")
        message_ts = (body.get("message") or {}).get("ts")
        if channel and message_ts:
            await client.chat_postMessage(
                channel=channel, thread_ts=message_ts, text=reply.text[:3000], blocks=reply.blocks
            )
        else:
            await respond(text=reply.text[:3000], blocks=reply.blocks, response_type="ephemeral")
