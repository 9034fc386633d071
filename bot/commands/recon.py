"""`/pay-recon`: the reconciliation checks, their stored runs, findings and tickets.

In Slack the drift alerts (bot/alerts.py) carry an "Open ticket" button (`recon_open_ticket`)
for the findings they name; it opens the ticket `/pay-recon ticket open` would.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from bot import blocks as b
from bot.alert_blocks import OPEN_TICKET, SHORT, parse_ticket_value
from bot.context import OpsContext
from bot.replies import Reply
from bot.slack_ui import Click, SlackEnv, SlackUI
from core import recon
from core.errors import InvalidInput, PayopsError
from core.recon import (
    Finding,
    ReconRun,
    RpcChainLookup,
    Ticket,
    latest_run,
    open_findings,
    run_reconciliation,
)
from core.triage import parse_window

HELP = """*/pay-recon* — reconcile (runbook: Reconciliation Workflow)
• `/pay-recon` — every check over everything, stored as a run; `/pay-recon quick` — only what
  changed since the last run (and every open finding); `/pay-recon last 24h` — intents
  created in a window
• `/pay-recon latest` — the latest stored run, without running; `/pay-recon findings` — open ones
• `/pay-recon ticket open <fingerprint...> ["note"]` — a ticket (RECON-n) with their user
  ids, tx signatures and intent ids; name it in corrections: `/pay-adjust ... ticket:RECON-n`
• `/pay-recon ticket show <RECON-n>`, `/pay-recon ticket list`, `/pay-recon ticket close
  <RECON-n>` (only once a re-run found all of its findings resolved)
Compares verified intents with purchase credits and expected with applied credits; checks
the ledger sums to zero and balances match their entries; finds duplicate signatures, stale
pending intents, failed-then-successful verifications, negative balances, overpayments, late
payments and payments that reached the treasury on chain but credited nothing. Zero drift
only when the totals agree and no finding is open (info findings are listed, not drift)."""

log = logging.getLogger("payops.bot")

TICKET_COMMAND = "/pay-recon ticket open"
_ICON = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
MAX_LINES = 15
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{8,64}")


def _line(f: Finding) -> str:
    return f"{f.severity} {f.kind} `{f.short}`: {f.detail}"


def _findings_text(findings: list[Finding], limit: int = MAX_LINES) -> list[str]:
    lines = [f"{_ICON.get(f.severity, '')} {_line(f)}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"... and {len(findings) - limit} more (`/pay-recon findings`)")
    return lines


def run_reply(run: ReconRun, *, stored: bool = False) -> Reply:
    """The summary of a run (pure): totals, drift, findings, what is new and resolved."""
    t = run.totals
    if run.window_start is not None:
        scope = (
            f"intents created {run.window_start:%Y-%m-%d %H:%M}.."
            f"{run.window_end:%Y-%m-%d %H:%M} UTC"
        )
    else:
        scope = "all time" + ("" if run.full else " (changes since the last run)")
    blocking = run.blocking_findings
    status = "ZERO DRIFT" if run.zero_drift else f"DRIFT: {len(blocking)} finding(s)"
    chain = "chain checked" if run.chain_checked else "chain NOT checked"
    when = f"run #{run.id} {run.mode}, {run.finished_at:%Y-%m-%d %H:%M:%S} UTC"
    totals = [
        ("Verified intents / credit txs", f"{t.confirmed_intents} / {t.purchase_transactions}"),
        ("Expected / applied credits", f"{t.expected_credits} / {t.applied_credits}"),
        ("Drift (credits / tokens)", f"{run.drift_credits} / {run.drift_tokens}"),
        ("Corrections", f"{t.corrections} ({t.correction_credits:+d} credits)"),
        ("Ledger sum", str(t.ledger_total)),
        ("Duplicate signatures", str(t.duplicate_signatures)),
        ("Stale pending", str(t.stale_pending)),
        ("Failed then succeeded", str(t.failed_then_succeeded)),
        ("Negative balances", str(t.negative_balances)),
        ("Unmatched payments", str(t.unmatched_payments)),
    ]
    changes = f"{len(run.new_findings)} new, {len(run.resolved_findings)} resolved, " + (
        f"{len(run.findings)} open"
    )
    lines = _findings_text(run.findings)
    resolved = [f"resolved `{f.short}` {f.kind}" for f in run.resolved_findings[:MAX_LINES]]
    title = f"Reconciliation — {status}" + (" (stored)" if stored else "")
    blocks = [
        b.header(title),
        b.context(f"{scope} · {when} · {chain} · {changes}"),
        b.fields(totals),
    ]
    if lines:
        blocks.append(b.section("\n".join(lines)))
    if resolved:
        blocks.append(b.section(":white_check_mark: " + "\n".join(resolved)))
    text = f"{title} ({scope})\n{when}; {chain}; {changes}\n"
    text += "\n".join(f"{k}: {v}" for k, v in totals)
    if lines:
        text += "\n" + "\n".join(_line(f) for f in run.findings[:MAX_LINES])
    if resolved:
        text += "\n" + "\n".join(resolved)
    # a fresh run with drift goes to the alerts channel too; looking at a stored one does not
    return Reply(text=text, blocks=blocks, alert=not run.zero_drift and not stored)


def findings_reply(findings: list[Finding]) -> Reply:
    """Every open finding (pure)."""
    if not findings:
        return Reply(text="No open reconciliation findings.")
    lines = [_line(f) for f in findings[:50]]
    head = f"{len(findings)} open reconciliation finding(s)"
    blocks = [b.header(head), b.section("\n".join(_findings_text(findings, 50)))]
    return Reply(text=head + "\n" + "\n".join(lines), blocks=blocks)


def ticket_reply(ticket: Ticket) -> Reply:
    """A ticket: what it covers, its findings (open or resolved) and its adjustments (pure)."""
    head = f"{ticket.ref} ({ticket.status})"
    lines = [
        f"opened by {ticket.opened_by} at {ticket.opened_at:%Y-%m-%d %H:%M} UTC"
        + (f" — {ticket.note}" if ticket.note else ""),
        "users: " + (", ".join(ticket.user_ids) or "-"),
        "tx signatures: " + (", ".join(ticket.signatures) or "-"),
        "intents: " + (", ".join(ticket.intent_ids) or "-"),
    ]
    lines += [
        f"finding `{f.fingerprint[:12]}` {f.kind} {f.status}"
        + (f" (run #{f.resolved_run})" if f.resolved_run else "")
        + f": {f.detail}"
        for f in ticket.findings
    ]
    lines += [
        f"adjustment #{a.id} {a.user_id} {a.credits:+d} {a.kind} {a.status}: {a.reason}"
        for a in ticket.adjustments
    ] or [f"no adjustments yet: reference it with `ticket:{ticket.ref}` in /pay-adjust"]
    if ticket.status == "closed":
        lines.append(f"closed by {ticket.closed_by} after run #{ticket.closed_run}")
    blocks = [b.header(f"Reconciliation ticket {head}"), b.section("\n".join(lines))]
    return Reply(text=head + "\n" + "\n".join(lines), blocks=blocks)


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    svc = ctx.services
    word = args[0].lower() if args else ""
    if word == "latest":
        stored = await latest_run(svc.pool)
        if stored is None:
            return Reply(text="No reconciliation has run yet: `/pay-recon` runs one.")
        return run_reply(stored, stored=True)
    if word == "findings":
        return findings_reply(await open_findings(svc.pool))
    if word == "ticket":
        return await _ticket(ctx, args[1:])
    now = svc.clock()
    window = None
    if args and word not in ("quick", "full"):
        window = parse_window(" ".join(args), now)
    smoke = svc.settings.smoke_signature
    result = await run_reconciliation(
        svc.pool,
        None if ctx.rpc is None else RpcChainLookup(ctx.rpc),
        now=now,
        actor=ctx.actor,
        pending_sla=timedelta(seconds=svc.settings.pending_sla_seconds),
        expiry_grace=svc.expiry_grace,
        payment=svc.payment,
        full=word != "quick",
        window_start=None if window is None else window.start,
        window_end=None if window is None else window.end,
        ignore_signatures=(smoke,) if smoke else (),
    )
    return run_reply(result)


async def _ticket(ctx: OpsContext, args: list[str]) -> Reply:
    svc = ctx.services
    action = args[0].lower() if args else ""
    rest = args[1:]
    if action == "list":
        tickets = await recon.list_open(svc.pool)
        if not tickets:
            return Reply(text="No open reconciliation tickets.")
        lines = [
            f"{t.ref}: {len(t.open_findings)} of {len(t.findings)} findings open, "
            f"{len(t.adjustments)} adjustment(s)"
            for t in tickets
        ]
        return Reply(text="\n".join(lines), blocks=[b.section("\n".join(lines))])
    if action == "show" and len(rest) == 1:
        return ticket_reply(await recon.get_ticket(svc.pool, rest[0]))
    if action == "open" and rest:
        fingerprints = [r for r in rest if _FINGERPRINT.fullmatch(r)]
        note = " ".join(r for r in rest if r not in fingerprints)
        async with svc.pool.acquire() as conn:
            ticket = await recon.open_ticket(
                conn, ctx.actor, fingerprints, now=svc.clock(), note=note
            )
        return ticket_reply(ticket)
    if action == "close" and len(rest) == 1:
        async with svc.pool.acquire() as conn:
            ticket = await recon.close_ticket(conn, ctx.actor, rest[0], now=svc.clock())
        return ticket_reply(ticket)
    raise InvalidInput(
        'use `/pay-recon ticket open <fingerprint...> ["note"]`, `ticket show <RECON-n>`, '
        "`ticket list` or `ticket close <RECON-n>`",
        code="invalid_arguments",
    )


# --- Slack: the alerts' "Open ticket" button -----------------------------------------------


async def open_ticket_clicked(env: SlackEnv, click: Click) -> None:
    """A ticket for the findings an alert names, replied in the alert's thread."""
    ctx = env.context_for(click.user)
    fingerprints = parse_ticket_value(click.value)
    message_ts = click.message_ts or ""
    try:
        await env.roles.require_oncall(click.user)
        # The button must belong to the alert it was clicked on: a forged value naming
        # other findings is refused.
        known = {p.item.fingerprint for p in await recon.of_message(env.services.pool, message_ts)}
        if not fingerprints or not set(fingerprints) <= known:
            raise PayopsError("this button does not belong to that alert", code="invalid_action")
        async with env.services.pool.acquire() as conn:
            ticket = await recon.open_ticket(
                conn, ctx.actor, fingerprints, now=env.services.clock(), note="from a drift alert"
            )
    except PayopsError as exc:
        await click.refuse(exc.message)
        return
    except Exception:
        log.exception(
            "opening a ticket from an alert failed", extra={"request_id": ctx.actor.request_id}
        )
        await click.refuse(
            f"the ticket could not be opened (request id {ctx.actor.request_id}); run "
            f"`{TICKET_COMMAND} {' '.join(fp[:SHORT] for fp in fingerprints)}` instead"
        )
        return
    ref = recon.ticket_ref(ticket.id)
    text = f"<@{click.user}> opened {ref} for {len(ticket.findings)} finding(s)"
    if click.channel and message_ts:
        await click.client.chat_postMessage(channel=click.channel, thread_ts=message_ts, text=text)
    else:
        await click.respond(text=text, response_type="ephemeral", replace_original=False)


SLACK = SlackUI(actions={OPEN_TICKET: open_ticket_clicked})
