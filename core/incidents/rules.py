"""Incident records: the pure rules (titles, notes, the runbook's closeout, which incident).

An incident is opened with a title, collects notes while the on-call engineers triage,
contain, diagnose and recover, and is closed with the runbook's closeout: root cause,
affected users, corrective action and prevention action — all four, or it stays open.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from core.errors import Conflict, InvalidInput, NotFound

MAX_TITLE = 200
MAX_TEXT = 4000


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Closeout:
    """The runbook's closeout, each part required."""

    root_cause: str
    affected_users: str
    corrective_action: str
    prevention_action: str


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    title: str
    status: IncidentStatus
    opened_by: str
    opened_at: datetime
    slack_channel: str | None
    slack_thread_ts: str | None
    closed_by: str | None
    closed_at: datetime | None
    closeout: Closeout | None  # set once closed
    severity: int | None = None  # 1 (worst) .. 3
    commander: str | None = None
    comms: str | None = None
    incident_channel: str | None = None  # its own #inc-<n>-<slug> channel, when created


@dataclass(frozen=True, slots=True)
class IncidentNote:
    id: int
    incident_id: int
    author: str
    text: str
    created_at: datetime


def check_title(title: str) -> str:
    """The title, trimmed; `InvalidInput` when empty or too long."""
    title = title.strip()
    if not title:
        raise InvalidInput("an incident needs a title", code="invalid_title")
    if len(title) > MAX_TITLE:
        raise InvalidInput(f"the title is at most {MAX_TITLE} characters", code="invalid_title")
    return title


def check_note(text: str) -> str:
    """A note's text, trimmed; `InvalidInput` when empty or too long."""
    text = text.strip()
    if not text:
        raise InvalidInput("the note is empty", code="invalid_note")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"a note is at most {MAX_TEXT} characters", code="invalid_note")
    return text


def closeout(
    *,
    root_cause: str | None,
    affected_users: str | None,
    corrective_action: str | None,
    prevention_action: str | None,
) -> Closeout:
    """The closeout, trimmed; `InvalidInput` naming every missing part."""
    given = {
        "root_cause": root_cause,
        "affected_users": affected_users,
        "corrective_action": corrective_action,
        "prevention_action": prevention_action,
    }
    parts = {name: (value or "").strip() for name, value in given.items()}
    missing = [name.replace("_", " ") for name, value in parts.items() if not value]
    if missing:
        raise InvalidInput(
            "closing an incident needs the runbook's closeout; missing: " + ", ".join(missing),
            code="closeout_incomplete",
        )
    too_long = [name.replace("_", " ") for name, v in parts.items() if len(v) > MAX_TEXT]
    if too_long:
        raise InvalidInput(
            f"at most {MAX_TEXT} characters each: " + ", ".join(too_long),
            code="closeout_incomplete",
        )
    return Closeout(**parts)


def check_closeout(value: Closeout) -> Closeout:
    """Re-validate a `Closeout` built directly (the constructor does not check)."""
    return closeout(**{f.name: getattr(value, f.name) for f in fields(value)})


class Role(enum.StrEnum):
    COMMANDER = "commander"
    COMMS = "comms"


SEVERITIES = (1, 2, 3)
_MENTION = re.compile(r"^<@([A-Z0-9_]+)(?:\|[^>]*)?>$")


def check_severity(text: str) -> int:
    """`1`, `2`, `3` (or `sev2`); `InvalidInput` otherwise."""
    value = text.strip().lower().removeprefix("sev")
    if not value.isdigit() or int(value) not in SEVERITIES:
        raise InvalidInput("severity is 1, 2 or 3 (1 is the worst)", code="invalid_severity")
    return int(value)


def check_role(role: str, who: str) -> tuple[Role, str]:
    """The role and the user: a Slack mention (`<@U123>` or `<@U123|name>`) or a plain id."""
    try:
        parsed = Role(role.strip().lower())
    except ValueError:
        raise InvalidInput("the roles are commander and comms", code="invalid_role") from None
    who = who.strip()
    match = _MENTION.match(who)
    user = match[1] if match else who.removeprefix("@")
    if not re.fullmatch(r"[\w.\-]{1,200}", user):
        raise InvalidInput("name the person: role commander @user", code="invalid_role")
    return parsed, user


def slug(title: str, limit: int = 40) -> str:
    """A channel-name-safe slug of a title: lowercase letters, digits and dashes."""
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:limit].rstrip("-") or "incident"


def channel_name(incident_id: int, title: str) -> str:
    """`inc-<n>-<slug>`, within Slack's 80 characters."""
    return f"inc-{incident_id}-{slug(title)}"[:80]


def check_open(incident: Incident) -> None:
    """Notes and closing need an open incident."""
    if incident.status is not IncidentStatus.OPEN:
        raise Conflict(f"incident {incident.id} is closed", code="incident_closed")


def pick_open(open_incidents: Sequence[Incident]) -> Incident:
    """The incident meant when none is named: there must be exactly one open."""
    if not open_incidents:
        raise NotFound("no incident is open", code="no_open_incident")
    if len(open_incidents) > 1:
        ids = ", ".join(f"#{i.id} ({i.title})" for i in open_incidents)
        raise Conflict(
            f"{len(open_incidents)} incidents are open — say which one: {ids}",
            code="several_open_incidents",
        )
    return open_incidents[0]
