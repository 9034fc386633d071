"""`/pay-triage <user|wallet|signature|intent id>` or `/pay-triage [last 2h]`.

In Slack the drift alerts (bot/alerts.py) carry "Run triage" buttons (`recon_triage`) for a
finding's user, signature or intent; the report is replied in the alert's thread.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from bot import blocks as b
from bot.alert_blocks import RUN_TRIAGE
from bot.context import OpsContext
from bot.replies import Reply, slack_text
from bot.slack_ui import Click, SlackEnv, SlackUI
from core import audit
from core.errors import PayopsError
from core.triage import TriageReport, WindowSummary, triage, triage_window

log = logging.getLogger("payops.bot")

HELP = """*/pay-triage* — incident triage (runbook: Incident Response, steps 1 and 3)
• `/pay-triage <user id | wallet | tx signature | intent id>` — intents, statuses,
  verification attempts (with request ids for the logs), ledger entries, balance, the live
  on-chain status of each signature, and the diagnosis: tx invalid/rejected, tx valid but
  ledger write failed, duplicate verify race/idempotency failure, stale pending intent, or healthy
• `/pay-triage` or `/pay-triage last 2h` — verify outcomes in a window: failures by code,
  distinct users and wallets affected (single-user or widespread), first and last seen"""

_WINDOW = re.compile(r"^(last\s+)?\d+\s*[mhd]$|\.\.", re.IGNORECASE)


def report_reply(report: TriageReport) -> Reply:
    ev = report.evidence
    subject = f"{report.subject.kind.value} {report.subject.value}"
    lines = [f"Triage of {subject}"]
    for d in report.diagnoses:
        lines.append(f"DIAGNOSIS {d.kind.value}: {d.summary}")
        lines += [f"  - {e}" for e in d.evidence_lines]
        if d.request_ids:
            lines.append(f"  request ids: {', '.join(d.request_ids)}")
    lines.append(
        f"intents: {len(ev.intents)}, attempts: {len(ev.attempts)}, ledger txs: {len(ev.ledger)}"
    )
    for i in ev.intents[-10:]:
        lines.append(
            f"  intent {i.id} {i.status.value} {i.credits} credits user {i.user_id} "
            f"sig {i.tx_signature or '-'}"
        )
    for a in ev.attempts[-10:]:
        lines.append(
            f"  attempt {a.created_at:%m-%d %H:%M:%S} {a.outcome} {a.code or ''} "
            f"sig {a.signature[:12]}.. req {a.request_id or '-'}"
        )
    for t in ev.ledger[-10:]:
        lines.append(
            f"  ledger tx {t.transaction_id} {t.kind.value} {t.amount:+d} user {t.user_id}"
        )
    for bal in ev.balances:
        lines.append(f"  balance {bal.user_id}: {bal.cached} (entries sum {bal.entries_sum})")
    for c in ev.chain:
        lines.append(
            f"  chain {c.signature[:16]}..: {c.status.value} "
            f"{c.confirmation_status or ''} {c.err or ''} {c.detail}".rstrip()
        )
    blocks = [b.header(f"Triage: {subject}"[:150])]
    for d in report.diagnoses:
        blocks.append(
            b.section(
                f"*{d.kind.value}* — {d.summary}\n"
                + "\n".join(f"• {e}" for e in d.evidence_lines[:15])
            )
        )
        if d.request_ids:
            blocks.append(b.context("request ids: " + ", ".join(d.request_ids[:20])))
    blocks.append(
        b.section(b.code("\n".join(lines[len(report.diagnoses) + 1 :]) or "nothing found"))
    )
    return Reply(text="\n".join(lines), blocks=blocks)


def window_reply(s: WindowSummary) -> Reply:
    span = f"{s.window.start:%Y-%m-%d %H:%M} - {s.window.end:%H:%M} UTC"
    lines = [
        f"Verify outcomes {span}: {s.attempts} attempts — scope: {s.scope.value}",
        "by outcome: " + (", ".join(f"{k} {v}" for k, v in s.by_outcome.items()) or "none"),
        "failures by code: "
        + (", ".join(f"{k} {v}" for k, v in s.failures_by_code.items()) or "none"),
        f"affected: {s.failing_users} user(s), {s.failing_wallets} wallet(s)"
        + (
            f"; most: {', '.join(f'{u} ({n})' for u, n in s.top_failing_users)}"
            if s.top_failing_users
            else ""
        ),
        f"first seen: {s.first_failure or '-'}; last seen: {s.last_failure or '-'}",
        f"intents created in the window still pending: {s.still_pending}",
    ]
    blocks = [
        b.header(f"Triage window: {s.scope.value}"),
        b.context(span),
        b.section("\n".join(lines[1:])),
    ]
    return Reply(text="\n".join(lines), blocks=blocks)


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    svc = ctx.services
    text = " ".join(args)
    now = svc.clock()
    if not args or _WINDOW.search(text):
        summary = await triage_window(svc.pool, text, now)
        await _audit(
            ctx,
            f"window {summary.window.start:%Y-%m-%d %H:%M}..{summary.window.end:%H:%M} UTC",
            [
                f"{summary.scope.value}: {summary.failing_users} user(s) failing",
                *(f"{code} {n}" for code, n in list(summary.failures_by_code.items())[:5]),
            ],
        )
        return window_reply(summary)
    sla = timedelta(seconds=svc.settings.pending_sla_seconds)
    report = await triage(svc.pool, ctx.rpc, text, now, sla)
    await _audit(
        ctx,
        f"{report.subject.kind.value} {report.subject.value}",
        [f"{d.kind.value}: {d.summary}" for d in report.diagnoses],
    )
    return report_reply(report)


async def _audit(ctx: OpsContext, subject: str, diagnosis: list[str]) -> None:
    """Who looked at what, and what triage said: a lookup during an incident is part of its
    record (the timeline)."""
    async with ctx.services.pool.acquire() as conn:
        await audit.record(
            conn,
            ctx.actor,
            action="triage.lookup",
            subject=f"triage:{subject}"[:300],
            after={"subject": subject, "diagnosis": diagnosis[:20]},
        )


# --- Slack: the alerts' "Run triage" button ------------------------------------------------


async def run_triage_clicked(env: SlackEnv, click: Click) -> None:
    ctx = env.context_for(click.user)
    target = click.value.strip()
    try:
        await env.roles.require_oncall(click.user)
        if not target:
            raise PayopsError("this button names nothing to triage", code="invalid_action")
        reply = await run(ctx, [target])
    except PayopsError as exc:
        await click.refuse(exc.message)
        return
    except Exception:
        log.exception("triage from an alert failed", extra={"request_id": ctx.actor.request_id})
        await click.refuse(f"triage failed unexpectedly (request id {ctx.actor.request_id})")
        return
    text = slack_text(reply.text)
    if click.channel and click.message_ts:
        await click.client.chat_postMessage(
            channel=click.channel, thread_ts=click.message_ts, text=text, blocks=reply.blocks
        )
    else:
        await click.respond(text=text, blocks=reply.blocks, response_type="ephemeral")


SLACK = SlackUI(actions={RUN_TRIAGE: run_triage_clicked})
