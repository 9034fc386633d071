"""Incidents in words and Block Kit, pure: the record, the list, the timeline, a status
update, and the closeout form."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot import blocks as b
from core.incidents import Impact, Incident, TimelineEntry, duration, impact_lines

CLOSEOUT_CALLBACK = "incident_closeout"
CLOSEOUT_FIELDS = (
    ("root_cause", "Root cause"),
    ("affected_users", "Affected users"),
    ("corrective_action", "Corrective action"),
    ("prevention_action", "Prevention action"),
)


def who(user: str | None) -> str:
    """A Slack user id as a mention; anything else as it is."""
    if not user:
        return "—"
    return f"<@{user}>" if user[:1] in "UW" and user.isalnum() and user.isupper() else user


def sev(incident: Incident) -> str:
    return f"SEV{incident.severity}" if incident.severity else "no severity"


def incident_text(incident: Incident) -> str:
    lines = [
        f"Incident #{incident.id}: {incident.title} — {incident.status.value}, {sev(incident)}",
        f"opened by {incident.opened_by} at {incident.opened_at:%Y-%m-%d %H:%M} UTC",
    ]
    if incident.commander or incident.comms:
        lines.append(f"commander: {incident.commander or '—'}; comms: {incident.comms or '—'}")
    if incident.closeout is not None:
        c = incident.closeout
        lines += [
            f"root cause: {c.root_cause}",
            f"affected users: {c.affected_users}",
            f"corrective action: {c.corrective_action}",
            f"prevention action: {c.prevention_action}",
        ]
    return "\n".join(lines)


def incident_blocks(incident: Incident, impact: Impact | None = None) -> list[b.Block]:
    out = [
        b.header(f"Incident #{incident.id}: {incident.title}"),
        b.context(
            f"{incident.status.value} · {sev(incident)} · opened by {who(incident.opened_by)} "
            f"at {incident.opened_at:%Y-%m-%d %H:%M} UTC"
        ),
    ]
    if incident.commander or incident.comms:
        out.append(
            b.fields([("Commander", who(incident.commander)), ("Comms", who(incident.comms))])
        )
    if impact is not None:
        out.append(b.section("*Measured impact*\n" + "\n".join(impact_lines(impact))))
    if incident.closeout is not None:
        c = incident.closeout
        out.append(
            b.fields(
                [
                    ("Root cause", c.root_cause),
                    ("Affected users", c.affected_users),
                    ("Corrective action", c.corrective_action),
                    ("Prevention action", c.prevention_action),
                ]
            )
        )
    return out


def list_text(found: Sequence[Incident], now: datetime) -> str:
    if not found:
        return "No incidents."
    return "\n".join(
        f"#{i.id} {i.status.value:6} {sev(i):11} {duration(i.opened_at, i.closed_at or now):>7}"
        f"  {i.title}"
        for i in found
    )


def entry_line(e: TimelineEntry) -> str:
    return f"{e.at:%H:%M:%S} {e.actor}: {e.text} (audit #{e.audit_id})"


def timeline_text(incident: Incident, entries: Sequence[TimelineEntry]) -> str:
    head = f"Timeline of incident #{incident.id}: {incident.title}"
    return "\n".join([head, *(entry_line(e) for e in entries)])


def entry_blocks(e: TimelineEntry) -> list[b.Block]:
    """One timeline entry as the feed posts it into the incident's thread."""
    return [
        b.section(f"*{e.kind}* — {e.text}"),
        b.context(f"{who(e.actor)} at {e.at:%Y-%m-%d %H:%M:%S} UTC · audit record #{e.audit_id}"),
    ]


def update_text(incident: Incident, impact: Impact, text: str, author: str) -> str:
    lines = [
        f"Status update on incident #{incident.id} ({incident.title}) by {author}",
        f"state: {incident.status.value}, {sev(incident)}, open for "
        f"{duration(incident.opened_at, impact.until)}",
        f"next step: {text}",
        "impact so far:",
        *(f"  {line}" for line in impact_lines(impact)),
    ]
    return "\n".join(lines)


def update_blocks(incident: Incident, impact: Impact, text: str, author: str) -> list[b.Block]:
    return [
        b.header(f"Update: incident #{incident.id} — {sev(incident)}"),
        b.fields(
            [
                ("State", incident.status.value),
                ("Severity", sev(incident)),
                ("Open for", duration(incident.opened_at, impact.until)),
                ("Commander", who(incident.commander)),
            ]
        ),
        b.section(f"*Next step*\n{text}"),
        b.section("*Impact so far*\n" + "\n".join(impact_lines(impact))),
        b.context(f"by {who(author)}"),
    ]


def closeout_modal(private_metadata: str = "") -> dict[str, Any]:
    """The runbook's closeout as a form: root cause, affected users, corrective, prevention."""
    return {
        "type": "modal",
        "callback_id": CLOSEOUT_CALLBACK,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Close incident"},
        "submit": {"type": "plain_text", "text": "Close"},
        "blocks": [
            {
                "type": "input",
                "block_id": key,
                "label": {"type": "plain_text", "text": label},
                "element": {"type": "plain_text_input", "action_id": "value", "multiline": True},
            }
            for key, label in CLOSEOUT_FIELDS
        ],
    }
