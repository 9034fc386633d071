"""SQL for incidents and their notes; every change is audited in the same transaction.

Noting and closing lock the incident row, so a note never lands on an incident that is
being closed at the same moment (migration 0002 refuses notes on a closed incident anyway).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from core import audit
from core.audit import Actor
from core.errors import NotFound
from core.incidents.rules import (
    Closeout,
    Incident,
    IncidentNote,
    IncidentStatus,
    check_closeout,
    check_note,
    check_open,
    check_title,
    pick_open,
)

_COLUMNS = """id, title, status, opened_by, opened_at, slack_channel, slack_thread_ts,
    closed_by, closed_at, root_cause, affected_users, corrective_action, prevention_action"""
_SELECT = f"SELECT {_COLUMNS} FROM incidents"  # noqa: S608 (constants only)


def incident_from_row(row: Any) -> Incident:
    status = IncidentStatus(row["status"])
    return Incident(
        id=row["id"],
        title=row["title"],
        status=status,
        opened_by=row["opened_by"],
        opened_at=row["opened_at"],
        slack_channel=row["slack_channel"],
        slack_thread_ts=row["slack_thread_ts"],
        closed_by=row["closed_by"],
        closed_at=row["closed_at"],
        closeout=(
            Closeout(
                root_cause=row["root_cause"],
                affected_users=row["affected_users"],
                corrective_action=row["corrective_action"],
                prevention_action=row["prevention_action"],
            )
            if status is IncidentStatus.CLOSED
            else None
        ),
    )


def _note_from_row(row: Any) -> IncidentNote:
    return IncidentNote(
        id=row["id"],
        incident_id=row["incident_id"],
        author=row["author"],
        text=row["text"],
        created_at=row["created_at"],
    )


def _subject(incident_id: int) -> str:
    return f"incident:{incident_id}"


async def open_incident(
    conn: asyncpg.Connection, actor: Actor, title: str, *, now: datetime
) -> Incident:
    """Open an incident titled `title`, opened by `actor`."""
    title = check_title(title)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO incidents (title, opened_by, opened_at) VALUES ($1, $2, $3)
                RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
            title,
            actor.id,
            now,
        )
        incident = incident_from_row(row)
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
        rows = await conn.fetch(_SELECT + " WHERE status = 'open' ORDER BY id FOR UPDATE")
        incident = pick_open([incident_from_row(r) for r in rows])
    else:
        row = await conn.fetchrow(_SELECT + " WHERE id = $1 FOR UPDATE", incident_id)
        if row is None:
            raise NotFound(f"no incident {incident_id}", code="incident_not_found")
        incident = incident_from_row(row)
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
        row = await conn.fetchrow(
            """INSERT INTO incident_notes (incident_id, author, text, created_at)
               VALUES ($1, $2, $3, $4)
               RETURNING id, incident_id, author, text, created_at""",
            incident.id,
            actor.id,
            text,
            now,
        )
        await audit.record(
            conn,
            actor,
            action="incident.note",
            subject=_subject(incident.id),
            after={"note_id": row["id"], "text": text},
        )
    return _note_from_row(row)


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
        row = await conn.fetchrow(
            f"""UPDATE incidents SET status = 'closed', closed_by = $2, closed_at = $3,
                    root_cause = $4, affected_users = $5, corrective_action = $6,
                    prevention_action = $7
                WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
            incident.id,
            actor.id,
            now,
            closeout.root_cause,
            closeout.affected_users,
            closeout.corrective_action,
            closeout.prevention_action,
        )
        closed = incident_from_row(row)
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
    done = await conn.execute(
        "UPDATE incidents SET slack_channel = $2, slack_thread_ts = $3 WHERE id = $1",
        incident_id,
        channel,
        ts,
    )
    if done == "UPDATE 0":
        raise NotFound(f"no incident {incident_id}", code="incident_not_found")


async def get(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> Incident | None:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1", incident_id)
    return None if row is None else incident_from_row(row)


async def list_open(conn: asyncpg.Connection | asyncpg.Pool) -> list[Incident]:
    """Open incidents, oldest first."""
    rows = await conn.fetch(_SELECT + " WHERE status = 'open' ORDER BY id")
    return [incident_from_row(r) for r in rows]


async def notes(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> list[IncidentNote]:
    """An incident's notes, oldest first."""
    rows = await conn.fetch(
        """SELECT id, incident_id, author, text, created_at FROM incident_notes
           WHERE incident_id = $1 ORDER BY id""",
        incident_id,
    )
    return [_note_from_row(r) for r in rows]
