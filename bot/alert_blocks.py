"""Pure Block Kit builders for the alerts channel: drift alerts, escalations, resolutions and
the daily summary. No I/O: tests call them and validate the blocks without Slack."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot import blocks as b
from bot.replies import slack_text
from core.daily import DailyFigures
from core.recon import AlertItem, AlertPost, ReconRun, Severity

OPEN_TICKET = "recon_open_ticket"
RUN_TRIAGE = "recon_triage"
TOP_EXAMPLES = 5
MAX_BUTTON_VALUE = 2000  # Slack's limit on a button's value
SHORT = 12  # a fingerprint as people read and type it (`/pay-recon ticket open <fp>`)
SEVERITIES = tuple(Severity)  # critical first
DRIFT_FINGERPRINT = "drift"  # the pseudo-finding of a non-zero drift: no ticket of its own
_ICON = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":large_orange_circle:",
    Severity.INFO: ":white_circle:",
}


def scope(run: ReconRun) -> str:
    """What a run covered, as the alerts name it."""
    if run.window_start is None:
        return run.mode.value  # full or incremental
    return f"{run.window_start:%Y-%m-%d %H:%M} - {run.window_end:%H:%M} UTC"


@dataclass(frozen=True, slots=True)
class Message:
    text: str
    blocks: list[b.Block]


def mention(slack_id: str) -> str:
    """A user (`U…`/`W…`) or user-group (`S…`) id as a Slack mention."""
    return f"<!subteam^{slack_id}>" if slack_id.startswith("S") else f"<@{slack_id}>"


def ticket_value(fingerprints: Sequence[str]) -> str:
    """The fingerprints an "Open ticket" button carries, as many as fit in a button value."""
    value = ""
    for fp in fingerprints:
        candidate = fp if not value else f"{value},{fp}"
        if len(candidate) > MAX_BUTTON_VALUE:
            break
        value = candidate
    return value


def parse_ticket_value(value: str) -> list[str]:
    return [fp for fp in (part.strip() for part in value.split(",")) if fp]


def by_severity(items: Sequence[AlertItem]) -> list[AlertItem]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(items, key=lambda i: (rank[i.severity], str(i.kind), i.fingerprint))


def _kinds_line(items: Sequence[AlertItem]) -> str:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    counts = Counter((i.severity, str(i.kind)) for i in items)
    ordered = sorted(counts.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1]))
    return "\n".join(f"{_ICON[sev]} *{kind}*: {n} ({sev})" for (sev, kind), n in ordered)


def ticketable(item: AlertItem) -> bool:
    """A reconciliation finding (a ticket can hold it), not the drift pseudo-finding."""
    return item.fingerprint != DRIFT_FINGERPRINT


def _example(item: AlertItem, index: int, prefix: str) -> list[b.Block]:
    buttons = []
    if ticketable(item):
        buttons.append(b.button("Open ticket", OPEN_TICKET, item.fingerprint))
    if item.triage:
        buttons.append(b.button("Run triage", RUN_TRIAGE, item.triage[:MAX_BUTTON_VALUE]))
    out = [
        b.section(
            f"{_ICON[item.severity]} *{item.kind}* ({item.severity}) "
            f"`{item.fingerprint[:SHORT]}`\n{item.summary}"
        )
    ]
    if buttons:
        out.append(b.actions(f"{prefix}:{index}", *buttons))
    return out


def _examples(items: Sequence[AlertItem], prefix: str) -> list[b.Block]:
    top = by_severity(items)[:TOP_EXAMPLES]
    out: list[b.Block] = []
    for n, item in enumerate(top):
        out += _example(item, n, prefix)
    if len(items) > len(top):
        out.append(b.context(f"…and {len(items) - len(top)} more; `/pay-recon` lists them all"))
    findings = [i.fingerprint for i in by_severity(items) if ticketable(i)]
    if len(findings) > 1:
        out.append(
            b.actions(
                f"{prefix}:all",
                b.button(
                    f"Open ticket for all {len(findings)}",
                    OPEN_TICKET,
                    ticket_value(findings),
                    "primary",
                ),
            )
        )
    return out


def _text_lines(items: Sequence[AlertItem]) -> list[str]:
    return [
        f"- [{i.severity}] {i.kind} {i.fingerprint[:SHORT]}: {i.summary}"
        for i in by_severity(items)
    ]


def announcement(items: Sequence[AlertItem], run: ReconRun) -> Message:
    """New findings of a run (and non-zero drift): what, how many, top examples, buttons."""
    critical = any(i.severity is Severity.CRITICAL for i in items)
    icon = ":rotating_light:" if critical else ":warning:"
    title = f"{icon} Reconciliation: {len(items)} new finding{'s' if len(items) != 1 else ''}"
    blocks = [
        b.header(title),
        b.fields(
            [
                ("Run", f"#{run.id} ({scope(run)})"),
                ("Drift", f"{run.drift_credits:+d} credits / {run.drift_tokens:+d} tokens"),
                ("Open findings", str(len(run.findings))),
                ("Chain checked", "yes" if run.chain_checked else "no (RPC unavailable)"),
            ]
        ),
        b.section(_kinds_line(items)),
        *_examples(items, "recon_new"),
        b.context(
            "Each finding is announced once while it stays open; its resolution is posted in "
            "this thread. Runbook: Reconciliation Workflow, step 3 (open a ticket, correct with "
            "`/pay-adjust`, re-run `/pay-recon`)."
        ),
    ]
    text = (
        f"Reconciliation run #{run.id} ({scope(run)}): {len(items)} new finding(s); "
        f"drift {run.drift_credits:+d} credits / {run.drift_tokens:+d} tokens\n"
        + "\n".join(_text_lines(items))
    )
    return Message(slack_text(text), blocks)


def escalation(
    posts: Sequence[AlertPost], mentions: Sequence[str], after: timedelta, now: datetime
) -> Message:
    """Findings still open `after` their announcement: once more, to the managers."""
    items = [p.item for p in posts]
    oldest = min(p.posted_at for p in posts)
    hours = after.total_seconds() / 3600
    who = " ".join(mention(m) for m in mentions) or "(no PAYOPS_SLACK_MANAGERS configured)"
    title = f":sos: Escalated: {len(items)} reconciliation finding(s) open over {hours:g}h"
    blocks = [
        b.header(title),
        b.section(
            f"{who} — still open; the oldest was announced {_ago(now - oldest)} ago "
            f"({oldest:%Y-%m-%d %H:%M} UTC). See the original alert threads."
        ),
        b.section(_kinds_line(items)),
        *_examples(items, "recon_escalated"),
    ]
    text = f"{title}\n{who}\n" + "\n".join(_text_lines(items))
    return Message(slack_text(text), blocks)


def resolution(posts: Sequence[AlertPost], run: ReconRun | None) -> Message:
    """A thread reply: these findings announced in this thread are resolved."""
    by = f" by reconciliation run #{run.id} ({scope(run)})" if run else ""
    title = f":white_check_mark: Resolved{by}: {len(posts)} finding(s)"
    lines = [f"• *{p.item.kind}* `{p.item.fingerprint[:SHORT]}`" for p in posts[:40]]
    if len(posts) > 40:
        lines.append(f"…and {len(posts) - 40} more")
    blocks = [b.section(f"*{title}*\n" + "\n".join(lines))]
    text = f"{title}\n" + "\n".join(f"- {p.item.kind} {p.item.fingerprint[:SHORT]}" for p in posts)
    return Message(slack_text(text), blocks)


def daily_summary(fig: DailyFigures, run: ReconRun | None, open_alerts: int) -> Message:
    """The daily summary for the alerts channel."""
    span = f"{fig.since:%Y-%m-%d %H:%M} - {fig.until:%Y-%m-%d %H:%M} UTC"
    attempts = ", ".join(f"{k} {v}" for k, v in fig.verify_attempts.items()) or "none"
    failures = ", ".join(f"{k} {v}" for k, v in fig.job_failures.items()) or "none"
    if run is None:
        recon = "no reconciliation run yet"
    else:
        state = "zero drift" if run.zero_drift else "DRIFT"
        recon = (
            f"run #{run.id} ({scope(run)}): {state}, {len(run.findings)} open finding(s), "
            f"drift {run.drift_credits:+d} credits / {run.drift_tokens:+d} tokens"
        )
    pairs = [
        ("Intents created / confirmed", f"{fig.intents_created} / {fig.intents_confirmed}"),
        ("Expired / rejected", f"{fig.intents_expired} / {fig.intents_rejected}"),
        ("Credits purchased", str(fig.credits_purchased)),
        ("Recovered by the sweep", str(fig.recovered)),
        ("Pending now (beyond SLA)", f"{fig.pending_now} ({fig.stale_pending_now})"),
        (
            "Adjustments applied (credits)",
            f"{fig.adjustments_applied} ({fig.adjustment_credits:+d}); "
            f"{fig.adjustments_waiting} awaiting approval",
        ),
        ("Open incidents", str(fig.open_incidents)),
        ("Open alerts", str(open_alerts)),
    ]
    blocks = [
        b.header(":bar_chart: Payments daily summary"),
        b.context(span),
        b.fields(pairs),
        b.section(
            f"*Reconciliation:* {recon}\n*Verify attempts:* {attempts}\n*Job failures:* {failures}"
        ),
    ]
    text = f"Payments daily summary {span}\n" + "\n".join(f"{k}: {v}" for k, v in pairs)
    text += f"\nReconciliation: {recon}\nVerify attempts: {attempts}\nJob failures: {failures}"
    return Message(slack_text(text), blocks)


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"
