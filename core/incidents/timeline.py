"""An incident's timeline, the pure part: which audit records belong to which incident, and
what each says in one line.

Every runbook action already writes an audit record (gate switches, smoke runs, adjustments
requested, decided and applied, reconciliation runs and tickets, webhook retries, triage
lookups, the incident's own notes, severity, roles, updates and pins). The timeline follower
(`core.incidents.follow`) reads the audit log in commit order (its sealed `seq`) and appends
one timeline entry per record of interest to each incident open at that point of the log:
records about one incident (subject `incident:<n>`) to that incident only; the others to
every incident open between its `incident.open` and `incident.close` records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Written by a Slack command that posts the same words into the thread itself: the feed does
# not post these a second time (the same actions from the CLI are posted by the feed).
SELF_POSTED = frozenset(
    {
        "incident.open",
        "incident.note",
        "incident.close",
        "incident.severity",
        "incident.role",
        "incident.update",
        "incident.pin",
    }
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    seq: int
    at: datetime
    actor: str
    source: str
    action: str
    subject: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Described:
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Span:
    """Where an incident is open in the audit log: from its open record to its close."""

    opened: int  # seq of incident.open
    closed: int | None  # seq of incident.close


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    id: int
    incident_id: int
    audit_id: int
    at: datetime
    actor: str
    kind: str
    text: str
    source: str = ""
    action: str = ""


def incident_subject(subject: str) -> int | None:
    """`incident:<n>` → n; None for any other subject."""
    head, _, tail = subject.partition(":")
    return int(tail) if head == "incident" and tail.isdigit() else None


def _gate(row: AuditRow) -> Described:
    _, switch, move = row.action.split(".", 2)
    reason = str(row.after.get("reason") or "")
    if switch == "verify":
        what = "Verify gate CLOSED" if move == "close" else "Verify gate OPENED"
    else:
        what = "Frontend retries PAUSED" if move == "close" else "Frontend retries RESUMED"
    return Described("gate", what + (f" — {reason}" if reason else ""))


def _smoke(row: AuditRow) -> Described:
    if row.after.get("passed"):
        return Described("smoke", "Smoke test passed")
    failed = ", ".join(str(f) for f in row.after.get("failed") or []) or "?"
    return Described("smoke", f"Smoke test FAILED: {failed}")


def _adjustment(row: AuditRow) -> Described:
    number = row.subject.partition(":")[2]
    a = row.after
    what = f"{int(a.get('credits') or 0):+d} credits for {a.get('user_id')}"
    step = row.action.split(".", 1)[1]
    if step == "request":
        text = f"Adjustment #{number} requested: {what} ({a.get('kind')}) — {a.get('reason')}"
    elif step == "decision":
        note = f" — {a['note']}" if a.get("note") else ""
        text = f"Adjustment #{number}: {a.get('decision')}{note}"
    elif step == "apply":
        approvers = ", ".join(str(x) for x in a.get("approvers") or [])
        text = (
            f"Adjustment #{number} APPLIED: {what}, ledger tx {a.get('ledger_tx')}, "
            f"approved by {approvers or '?'}"
        )
    else:
        text = f"Adjustment #{number} {step}ed: {what}".replace("expireed", "expired")
    return Described("adjustment", text)


def _recon(row: AuditRow) -> Described | None:
    a = row.after
    new = len(a.get("new_findings") or [])
    resolved = len(a.get("resolved_findings") or [])
    if row.source == "scheduler" and (a.get("zero_drift") or not (new or resolved)):
        return None  # the scheduled run every few minutes: only when its drift changes
    number = row.subject.partition(":")[2]
    if a.get("zero_drift"):
        drift = "zero drift"
    else:
        drift = (
            f"drift {a.get('drift_credits')} credits, {a.get('drift_tokens')} token units, "
            f"{a.get('open_findings')} open finding(s)"
        )
    return Described(
        "recon",
        f"Reconciliation run #{number} ({a.get('mode')}): {drift} ({new} new, {resolved} resolved)",
    )


def _ticket(row: AuditRow) -> Described:
    ref = row.subject.partition(":")[2]
    move = "opened" if row.action.endswith("open") else "closed"
    return Described("recon", f"Reconciliation ticket {ref} {move}")


def _webhook(row: AuditRow) -> Described:
    if row.action == "webhook.retry":
        event = row.subject.partition(":")[2]
        return Described("webhook", f"Webhook event {event} delivered again")
    return Described(
        "webhook", f"Webhooks replayed since {row.after.get('since')}: {row.after.get('count')}"
    )


def _triage(row: AuditRow) -> Described:
    a = row.after
    found = "; ".join(str(d) for d in a.get("diagnosis") or []) or "nothing found"
    return Described("triage", f"Triage of {a.get('subject')}: {found}")


def _incident(row: AuditRow) -> Described:
    a, b = row.after, row.before
    step = row.action.split(".", 1)[1]
    texts: dict[str, Callable[[], str]] = {
        "open": lambda: f"Incident opened: {a.get('title')}",
        "note": lambda: f"Note: {a.get('text')}",
        "severity": lambda: (
            f"Severity SEV{a.get('severity')}"
            + (f" (was SEV{b['severity']})" if b.get("severity") else "")
        ),
        "role": lambda: f"{a.get('role')}: {a.get('user')}",
        "update": lambda: f"Status update: {a.get('text')}",
        "pin": lambda: f"📌 {a.get('author')}: {a.get('text')}",
        "channel": lambda: f"Incident channel {a.get('name')}",
        "close": lambda: f"Incident closed. Root cause: {a.get('root_cause')}",
    }
    return Described("incident", texts.get(step, lambda: step)())


_BY_PREFIX: tuple[tuple[str, Callable[[AuditRow], Described | None]], ...] = (
    ("gate.", _gate),
    ("smoke.run", _smoke),
    ("adjustment.", _adjustment),
    ("recon.run", _recon),
    ("recon.ticket.", _ticket),
    ("webhook.", _webhook),
    ("triage.lookup", _triage),
    ("incident.", _incident),
    ("database.restored", lambda r: Described("rollback", "Database restored from a snapshot")),
)


def describe(row: AuditRow) -> Described | None:
    """The timeline's line for an audit record, or None when it is not a runbook action."""
    for prefix, render in _BY_PREFIX:
        if row.action.startswith(prefix):
            return render(row)
    return None


def assign(
    rows: Sequence[AuditRow], spans: Mapping[int, Span]
) -> list[tuple[int, AuditRow, Described]]:
    """(incident id, record, line) for each record of interest and each incident it joins,
    in the log's order."""
    out: list[tuple[int, AuditRow, Described]] = []
    for row in rows:
        described = describe(row)
        if described is None:
            continue
        own = incident_subject(row.subject)
        if own is not None:
            if own in spans:
                out.append((own, row, described))
            continue
        for incident_id, span in sorted(spans.items()):
            if span.opened < row.seq and (span.closed is None or row.seq < span.closed):
                out.append((incident_id, row, described))
    return out


def should_post(entry: TimelineEntry) -> bool:
    """The feed posts every entry but those a Slack command already put in the thread."""
    return not (entry.source == "slack" and entry.action in SELF_POSTED)
