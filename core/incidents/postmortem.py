"""The postmortem of an incident as Markdown, pure: summary, severity, roles, duration; the
measured impact; the timeline (each entry with its audit record); the runbook's closeout;
the ledger corrections applied, with their approvers; reconciliation before and after."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from core.incidents.impact import Impact, impact_lines
from core.incidents.rules import Incident
from core.incidents.timeline import TimelineEntry


def duration(since: datetime, until: datetime) -> str:
    """`2h 05m`, `12m`, `3d 4h`."""
    total = max(until - since, timedelta(0))
    minutes = int(total.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins:02d}m" if hours else f"{mins}m"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _summary(incident: Incident, now: datetime) -> list[str]:
    until = incident.closed_at or now
    closed = (
        f"{incident.closed_at:%Y-%m-%d %H:%M} UTC by {incident.closed_by}"
        if incident.closed_at
        else "still open"
    )
    return [
        f"# Postmortem — incident #{incident.id}: {incident.title}",
        "",
        "## Summary",
        "",
        f"- Status: {incident.status.value}",
        f"- Severity: {f'SEV{incident.severity}' if incident.severity else 'not set'}",
        f"- Commander: {incident.commander or 'not named'}",
        f"- Comms: {incident.comms or 'not named'}",
        f"- Opened: {incident.opened_at:%Y-%m-%d %H:%M} UTC by {incident.opened_by}",
        f"- Closed: {closed}",
        f"- Duration: {duration(incident.opened_at, until)}",
    ]


def _timeline(entries: Sequence[TimelineEntry]) -> list[str]:
    out = ["", "## Timeline", ""]
    if not entries:
        return [*out, "No runbook action was recorded while the incident was open."]
    out += ["| time (UTC) | who | what | audit record |", "|---|---|---|---|"]
    out += [
        f"| {e.at:%Y-%m-%d %H:%M:%S} | {_cell(e.actor)} | {_cell(e.text)} | #{e.audit_id} |"
        for e in entries
    ]
    return out


def _closeout(incident: Incident) -> list[str]:
    out = ["", "## Closeout", ""]
    c = incident.closeout
    if c is None:
        return [*out, "Not closed yet: the runbook's closeout is still to be written."]
    return [
        *out,
        f"- Root cause: {c.root_cause}",
        f"- Affected users: {c.affected_users}",
        f"- Corrective action: {c.corrective_action}",
        f"- Prevention action: {c.prevention_action}",
    ]


def _corrections(impact: Impact) -> list[str]:
    out = ["", "## Ledger corrections", ""]
    if not impact.corrections:
        return [*out, "No adjustment was applied during the incident."]
    out += [
        "| adjustment | user | credits | kind | ledger tx | requested by | approved by | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| #{c.adjustment_id} | {_cell(c.user_id)} | {c.credits:+d} | {c.kind} | "
        f"{c.ledger_tx} | {_cell(c.requester)} | {_cell(', '.join(c.approvers))} | "
        f"{_cell(c.reason)} |"
        for c in impact.corrections
    ]
    return out


def _reconciliation(impact: Impact) -> list[str]:
    before = impact.drift_at_open.line() if impact.drift_at_open else "no run before the open"
    after = impact.drift_now.line() if impact.drift_now else "no run since"
    return ["", "## Reconciliation", "", f"- Before (at open): {before}", f"- After: {after}"]


def render(
    incident: Incident, impact: Impact, entries: Sequence[TimelineEntry], *, now: datetime
) -> str:
    """The whole postmortem, every section present even when it has nothing to say."""
    lines = _summary(incident, now)
    lines += [
        "",
        "## Measured impact",
        "",
        f"From {impact.since:%Y-%m-%d %H:%M} to {impact.until:%Y-%m-%d %H:%M} UTC "
        "(from the database):",
        "",
    ]
    lines += [f"- {line}" for line in impact_lines(impact)]
    lines += _timeline(entries)
    lines += _closeout(incident)
    lines += _corrections(impact)
    lines += _reconciliation(impact)
    return "\n".join(lines) + "\n"
