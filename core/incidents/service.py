"""Incidents, the use case: open, note, close; every change is audited in the same
transaction. The SQL is `core.incidents.store`.

Noting and closing lock the incident row, so a note never lands on an incident that is
being closed at the same moment (migration 0002 refuses notes on a closed incident anyway).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from core import audit, db
from core.audit import Actor
from core.errors import NotFound
from core.incidents import store
from core.incidents.rules import (
    MAX_TEXT,
    Closeout,
    Incident,
    IncidentNote,
    check_closeout,
    check_note,
    check_open,
    check_role,
    check_severity,
    check_title,
    pick_open,
)


def _subject(incident_id: int) -> str:
    return f"incident:{incident_id}"


async def open_incident(
    conn: asyncpg.Connection, actor: Actor, title: str, *, now: datetime
) -> Incident:
    """Open an incident titled `title`, opened by `actor`."""
    title = check_title(title)
    async with conn.transaction():
        incident = await store.insert(conn, title, actor.id, now)
        await audit.record(
            conn,
            actor,
            action="incident.open",
            subject=_subject(incident.id),
            after={"title": title, "status": incident.status.value},
        )
    return incident


async def _lock(conn: asyncpg.Connection, incident_id: int | None) -> Incident:
    """The named incident, or the single open one, row-locked and still open."""
    if incident_id is None:
        incident = pick_open(await store.list_open(conn, lock=True))
    else:
        found = await store.get(conn, incident_id, lock=True)
        if found is None:
            raise NotFound(f"no incident {incident_id}", code="incident_not_found")
        incident = found
    check_open(incident)
    return incident


async def add_note(
    conn: asyncpg.Connection,
    actor: Actor,
    text: str,
    *,
    now: datetime,
    incident_id: int | None = None,
) -> IncidentNote:
    """Add a note to incident `incident_id`, or to the single open incident when not given."""
    text = check_note(text)
    async with conn.transaction():
        incident = await _lock(conn, incident_id)
        note = await store.insert_note(conn, incident.id, actor.id, text, now)
        await audit.record(
            conn,
            actor,
            action="incident.note",
            subject=_subject(incident.id),
            after={"note_id": note.id, "text": text},
        )
    return note


async def close_incident(
    conn: asyncpg.Connection,
    actor: Actor,
    closeout: Closeout,
    *,
    now: datetime,
    incident_id: int | None = None,
) -> Incident:
    """Close an incident (by id, or the single open one) with the runbook's closeout."""
    closeout = check_closeout(closeout)
    async with conn.transaction():
        incident = await _lock(conn, incident_id)
        closed = await store.mark_closed(conn, incident.id, actor.id, closeout, now)
        await audit.record(
            conn,
            actor,
            action="incident.close",
            subject=_subject(incident.id),
            before={"status": incident.status.value},
            after={
                "status": closed.status.value,
                "root_cause": closeout.root_cause,
                "affected_users": closeout.affected_users,
                "corrective_action": closeout.corrective_action,
                "prevention_action": closeout.prevention_action,
            },
        )
    return closed


async def set_thread(
    conn: asyncpg.Connection | asyncpg.Pool, incident_id: int, channel: str, ts: str
) -> None:
    """Remember the incident's Slack thread, where the bot posts its updates."""
    if not await db.set_slack_thread(conn, "incidents", incident_id, channel, ts):
        raise NotFound(f"no incident {incident_id}", code="incident_not_found")


async def adopt_thread(
    conn: asyncpg.Connection | asyncpg.Pool, incident_id: int, channel: str, ts: str
) -> bool:
    """Give a Slack thread to an incident that has none (opened on the CLI, or while Slack
    could not be reached); False when it got one meanwhile."""
    return await store.adopt_thread(conn, incident_id, channel, ts)


async def get(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> Incident | None:
    return await store.get(conn, incident_id)


async def list_open(conn: asyncpg.Connection | asyncpg.Pool) -> list[Incident]:
    """Open incidents, oldest first."""
    return await store.list_open(conn)


async def notes(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> list[IncidentNote]:
    """An incident's notes, oldest first."""
    return await store.notes(conn, incident_id)


async def set_severity(
    conn: asyncpg.Connection, actor: Actor, severity: str, *, incident_id: int | None = None
) -> Incident:
    """SEV1..3 on an open incident (by id, or the single open one)."""
    value = check_severity(severity)
    async with conn.transaction():
        incident = await _lock(conn, incident_id)
        changed = await store.set_severity(conn, incident.id, value)
        await audit.record(
            conn,
            actor,
            action="incident.severity",
            subject=_subject(incident.id),
            before={"severity": incident.severity},
            after={"severity": value},
        )
    return changed


async def set_role(
    conn: asyncpg.Connection,
    actor: Actor,
    role: str,
    who: str,
    *,
    incident_id: int | None = None,
) -> Incident:
    """Name the incident's commander or comms lead."""
    parsed, user = check_role(role, who)
    async with conn.transaction():
        incident = await _lock(conn, incident_id)
        changed = await store.set_role(conn, incident.id, parsed.value, user)
        await audit.record(
            conn,
            actor,
            action="incident.role",
            subject=_subject(incident.id),
            before={"role": parsed.value, "user": getattr(incident, parsed.value)},
            after={"role": parsed.value, "user": user},
        )
    return changed


async def record_update(
    conn: asyncpg.Connection,
    actor: Actor,
    text: str,
    facts: dict[str, Any],
    *,
    incident_id: int | None = None,
) -> Incident:
    """A status update (its text and the measured facts it showed), on the record."""
    text = check_note(text)
    async with conn.transaction():
        incident = await _lock(conn, incident_id)
        await audit.record(
            conn,
            actor,
            action="incident.update",
            subject=_subject(incident.id),
            after={"text": text, **facts},
        )
    return incident


async def pin_message(
    conn: asyncpg.Connection,
    actor: Actor,
    incident_id: int,
    *,
    author: str,
    text: str,
    message_ts: str,
) -> bool:
    """A thread message pinned to the timeline (📌); False when it already was."""
    text = check_note(text[:MAX_TEXT])
    async with conn.transaction():
        incident = await _lock(conn, incident_id)
        seen = await conn.fetchval(
            """SELECT 1 FROM audit_log WHERE subject = $1 AND action = 'incident.pin'
               AND after->>'message_ts' = $2""",
            _subject(incident.id),
            message_ts,
        )
        if seen:
            return False
        await audit.record(
            conn,
            actor,
            action="incident.pin",
            subject=_subject(incident.id),
            after={"author": author, "text": text, "message_ts": message_ts},
        )
    return True


async def set_channel(
    conn: asyncpg.Connection, actor: Actor, incident_id: int, name: str, channel: str
) -> None:
    """Record the incident's own channel (`#inc-<n>-<slug>`)."""
    async with conn.transaction():
        await store.set_channel(conn, incident_id, channel)
        await audit.record(
            conn,
            actor,
            action="incident.channel",
            subject=_subject(incident_id),
            after={"name": name, "channel": channel},
        )


async def find(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int | None) -> Incident:
    """The named incident, or the single open one; `NotFound` otherwise."""
    if incident_id is None:
        return pick_open(await store.list_open(conn))
    found = await store.get(conn, incident_id)
    if found is None:
        raise NotFound(f"no incident {incident_id}", code="incident_not_found")
    return found


async def in_channel(
    conn: asyncpg.Connection | asyncpg.Pool, channel: str | None, thread_ts: str | None
) -> Incident | None:
    """The incident a Slack channel (its own) or thread belongs to."""
    if not channel:
        return None
    if thread_ts:
        found = await store.by_thread(conn, channel, thread_ts)
        if found is not None:
            return found
    return await store.by_channel(conn, channel)


async def recent(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 20) -> list[Incident]:
    return await store.recent(conn, limit)
