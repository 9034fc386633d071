"""The state of payments at a glance: the Slack App Home (`app_home_opened` → `views.publish`),
`/pay-home`, and `payops ops home`.

It shows the gate and client-retry switches (who changed them, why), the latest
reconciliation (drift, open findings, tickets), adjustments waiting for approval — with
Approve/Reject buttons for managers that decide through the approval thread's own path
(bot/commands/adjust.py: the same rules, the same thread replies) — open incidents, and the
scheduled jobs' last runs. Whoever opened it in the last PAYOPS_HOME_RECENT_SECONDS sees it
refreshed when any of that changes (bot/incident_feed.py follows the audit log).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks as b
from bot.authz import Roles
from bot.commands import adjust
from bot.context import OpsContext
from bot.incident_blocks import sev, who
from bot.parse import parse_id
from bot.replies import Reply
from bot.slack_ui import Click, Event, SlackEnv, SlackUI
from core import adjustments, gate, incidents, jobs, recon
from core.adjustments import Adjustment
from core.errors import PayopsError
from core.gate import GateState, Switch
from core.incidents import Incident, duration
from core.jobs import JobRun
from core.recon import ReconRun, Ticket
from core.services import Services

log = logging.getLogger("payops.bot")

HELP = """*/pay-home* — the state of payments at a glance (also the app's Home tab)
• `/pay-home` — gate and retry switches, the latest reconciliation, adjustments waiting for
  approval, open incidents and the scheduled jobs' last runs"""

HOME_APPROVE = "home_adjust_approve"
HOME_REJECT = "home_adjust_reject"


@dataclass(frozen=True)
class HomeState:
    gate: GateState
    recon: ReconRun | None
    tickets: Sequence[Ticket]
    pending: Sequence[Adjustment]
    incidents: Sequence[Incident]
    jobs: Sequence[JobRun]  # the latest run of each job
    now: datetime


async def gather(svc: Services) -> HomeState:
    pool = svc.pool
    latest: dict[str, JobRun] = {}
    for run in await jobs.runs(pool, limit=200):
        latest.setdefault(run.job, run)
    return HomeState(
        gate=await gate.read(pool),
        recon=await recon.latest_run(pool),
        tickets=await recon.list_open(pool),
        pending=await adjustments.list_pending(pool, limit=20),
        incidents=await incidents.list_open(pool),
        jobs=sorted(latest.values(), key=lambda r: r.job),
        now=svc.clock(),
    )


def _switch(s: Switch) -> str:
    state = "🟢 open" if s.is_open else "🔴 *closed*"
    why = f" — {s.reason}" if s.reason else ""
    return f"{state} by {who(s.changed_by)} at {s.changed_at:%Y-%m-%d %H:%M} UTC{why}"


def _recon_line(state: HomeState) -> str:
    run = state.recon
    if run is None:
        return "no reconciliation run yet"
    drift = (
        "zero drift"
        if run.zero_drift
        else f"*drift {run.drift_credits} credits, {run.drift_tokens} token units*"
    )
    return (
        f"run #{run.id} ({run.mode.value}, {run.started_at:%Y-%m-%d %H:%M} UTC): {drift}; "
        f"{len(run.findings)} open finding(s); {len(state.tickets)} open ticket(s)"
    )


def _adjustment_line(a: Adjustment) -> str:
    return (
        f"#{a.id} {a.credits:+d} credits for {a.user_id} ({a.kind.value}) — {a.reason} · "
        f"by {who(a.requester)}, needs {a.approvals_required} approval(s)"
    )


def _pending_blocks(state: HomeState, manager: bool) -> list[b.Block]:
    if not state.pending:
        return [b.section("*Adjustments waiting for approval*\nnone")]
    out = [b.section(f"*Adjustments waiting for approval* ({len(state.pending)})")]
    for a in state.pending[:10]:
        out.append(b.section(_adjustment_line(a)))
        if manager and a.slack_thread_ts:
            out.append(
                b.actions(
                    f"home_adjustment:{a.id}",
                    b.button("Approve", HOME_APPROVE, str(a.id), "primary"),
                    b.button("Reject", HOME_REJECT, str(a.id), "danger"),
                )
            )
    return out


def _incident_line(i: Incident, now: datetime) -> str:
    return (
        f"#{i.id} {i.title} — {sev(i)}, open {duration(i.opened_at, now)}, "
        f"commander {who(i.commander)}"
    )


def _job_line(r: JobRun) -> str:
    mark = {"ok": "✅", "failed": "❌", "running": "⏳"}.get(r.outcome.value, "·")
    return f"{mark} {r.job}: {r.outcome.value} at {r.started_at:%H:%M:%S} UTC {r.detail[:80]}"


def home_lines(state: HomeState) -> list[str]:
    """The Home as plain lines (the CLI, and Slack's fallback text)."""
    return [
        "Payments at a glance",
        f"verify: {_switch(state.gate.verify)}",
        f"client retries: {_switch(state.gate.client_retries)}",
        f"reconciliation: {_recon_line(state)}",
        f"adjustments waiting for approval: {len(state.pending)}",
        *(f"  {_adjustment_line(a)}" for a in state.pending[:10]),
        f"open incidents: {len(state.incidents)}",
        *(f"  {_incident_line(i, state.now)}" for i in state.incidents),
        "jobs:",
        *(f"  {_job_line(r)}" for r in state.jobs),
    ]


def home_view(state: HomeState, *, manager: bool) -> dict[str, Any]:
    """The Home tab (a `home` view), valid Block Kit."""
    blocks: list[b.Block] = [
        b.header("Payments at a glance"),
        b.context(f"as of {state.now:%Y-%m-%d %H:%M:%S} UTC"),
        b.fields(
            [
                ("Verify", _switch(state.gate.verify)),
                ("Client retries", _switch(state.gate.client_retries)),
            ]
        ),
        b.divider(),
        b.section(f"*Reconciliation*\n{_recon_line(state)}"),
        b.divider(),
        *_pending_blocks(state, manager),
        b.divider(),
        b.section(
            "*Open incidents*\n"
            + ("\n".join(_incident_line(i, state.now) for i in state.incidents) or "none")
        ),
        b.divider(),
        b.section("*Jobs*\n" + ("\n".join(_job_line(r) for r in state.jobs) or "no runs yet")),
    ]
    return {"type": "home", "blocks": blocks[:100]}


def not_on_call_view(user: str) -> dict[str, Any]:
    return {
        "type": "home",
        "blocks": [
            b.header("payops"),
            b.section(f"<@{user}> is not on call: ask to be added to PAYOPS_SLACK_ONCALL."),
        ],
    }


async def publish_for(svc: Services, roles: Roles, client: AsyncWebClient, user: str) -> None:
    try:
        await roles.require_oncall(user)
    except PayopsError:
        await client.views_publish(user_id=user, view=not_on_call_view(user))
        return
    manager = user in await roles.managers()
    await client.views_publish(user_id=user, view=home_view(await gather(svc), manager=manager))
    await incidents.mark_published(svc.pool, user, svc.clock())


async def opened(env: SlackEnv, event: Event) -> None:
    """`app_home_opened` on the Home tab: remember the viewer, publish their view."""
    if event.event.get("tab", "home") != "home" or not event.user:
        return
    await incidents.note_opener(env.services.pool, event.user, env.services.clock())
    await publish_for(env.services, env.roles, event.client, event.user)


async def refresh_recent(svc: Services, client: AsyncWebClient) -> int:
    """Publish the Home again for whoever opened it recently; how many views."""
    since = svc.clock() - timedelta(seconds=svc.settings.home_recent_seconds)
    users = await incidents.recent_openers(svc.pool, since)

    async def read_group(group: str) -> list[str]:
        answer = await client.usergroups_users_list(usergroup=group)
        return list(answer.get("users") or [])

    roles = Roles(svc.settings.slack_oncall, svc.settings.slack_managers, read_group)
    for user in users:
        try:
            await publish_for(svc, roles, client, user)
        except Exception as exc:  # one viewer's failure must not stop the others
            log.warning("cannot refresh the Home of %s: %s", user, exc)
    return len(users)


async def _decide(env: SlackEnv, click: Click, approve: bool) -> None:
    """A Home button decides through the approval thread's own path: the click is handed to
    the adjust command's handler as if made on the request's message."""
    raw = click.value
    number = parse_id(raw)
    known = await adjustments.get(env.services.pool, number) if number is not None else None
    body = dict(click.body)
    if known is not None and known.slack_thread_ts:
        body["message"] = {"ts": known.slack_thread_ts, "text": ""}
        body["channel"] = {"id": known.slack_channel}

    async def tell(**kwargs: Any) -> None:  # a Home has no response_url: say it in a DM
        await click.client.chat_postMessage(channel=click.user, text=kwargs.get("text", ""))

    thread_click = Click(body, click.client, click.respond if body.get("response_url") else tell)
    await (adjust.approve if approve else adjust.reject)(env, thread_click)
    await publish_for(env.services, env.roles, click.client, click.user)


async def approve_clicked(env: SlackEnv, click: Click) -> None:
    await _decide(env, click, approve=True)


async def reject_clicked(env: SlackEnv, click: Click) -> None:
    await _decide(env, click, approve=False)


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    state = await gather(ctx.services)
    manager = ctx.actor.id in await ctx.roles.managers()
    blocks = [
        blk for blk in home_view(state, manager=manager)["blocks"] if blk["type"] != "actions"
    ]
    return Reply(text="\n".join(home_lines(state)), blocks=blocks)


SLACK = SlackUI(
    actions={HOME_APPROVE: approve_clicked, HOME_REJECT: reject_clicked},
    events={"app_home_opened": opened},
)
