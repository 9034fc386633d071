"""`/pay-recon [window]`: the reconciliation checks and their summary."""

from __future__ import annotations

from datetime import timedelta

from bot import blocks as b
from bot.context import OpsContext
from bot.replies import Reply
from core.recon import ReconSummary, quick_reconcile
from core.triage_window import parse_window

HELP = """*/pay-recon [window]* — reconcile (runbook: Reconciliation Workflow)
• `/pay-recon` — everything; `/pay-recon last 24h` — intents created in the window
Compares verified intents with credit transactions and expected with applied credits, and
checks duplicate signatures, stale pending intents, failed-then-successful verifications,
negative balances and the ledger's own invariants. Zero drift only when every check holds."""


def recon_reply(summary: ReconSummary) -> Reply:
    t = summary.totals
    scope = (
        "all time"
        if summary.window_start is None
        else f"since {summary.window_start:%Y-%m-%d %H:%M} UTC"
    )
    status = "ZERO DRIFT" if summary.zero_drift else f"DRIFT: {len(summary.findings)} finding(s)"
    totals = [
        ("Verified intents / credit txs", f"{t.confirmed_intents} / {t.purchase_transactions}"),
        ("Expected / applied credits", f"{t.expected_credits} / {t.applied_credits}"),
        ("Drift (credits)", str(summary.drift_credits)),
        ("Stale pending", str(t.stale_pending)),
        ("Negative balances", str(t.negative_balances)),
        ("Duplicate signatures", str(t.duplicate_signatures)),
    ]
    finding_lines = [f"{f.check}: {f.detail}" for f in summary.findings]
    blocks = [b.header(f"Reconciliation — {status}"), b.context(scope), b.fields(totals)]
    if finding_lines:
        blocks.append(b.section("\n".join(f":warning: {line}" for line in finding_lines)))
    text = f"Reconciliation ({scope}): {status}\n" + "\n".join(f"{k}: {v}" for k, v in totals)
    if finding_lines:
        text += "\n" + "\n".join(finding_lines)
    return Reply(text=text, blocks=blocks, alert=not summary.zero_drift)


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    svc = ctx.services
    now = svc.clock()
    since = parse_window(" ".join(args), now).start if args else None
    summary = await quick_reconcile(
        svc.pool,
        now=now,
        pending_sla=timedelta(seconds=svc.settings.pending_sla_seconds),
        since=since,
    )
    return recon_reply(summary)
