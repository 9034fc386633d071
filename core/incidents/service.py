"""Incidents, the use case: open, note, close; every change is audited in the same
transaction. The SQL is `core.incidents.store`.

Noting and closing lock the incident row, so a note never lands on an incident that is
being closed at the same moment (migration 0002 refuses notes on a closed incident anyway).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from core import audit, db
from core.audit import Actor
from core.errors import NotFound
from core.incidents import store
from core.incidents.rules import (
    Closeout,
    Incident,
    IncidentNote,
    check_closeout,
    check_note,
    check_open,
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


async def get(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> Incident | None:
    return await store.get(conn, incident_id)


async def list_open(conn: asyncpg.Connection | asyncpg.Pool) -> list[Incident]:
    """Open incidents, oldest first."""
    return await store.list_open(conn)


async def notes(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> list[IncidentNote]:
    """An incident's notes, oldest first."""
    return await store.notes(conn, incident_id)
