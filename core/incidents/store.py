"""SQL for incidents and their notes (tables of migration 0002): rows in, records out.

No policy here: `core.incidents.service` checks, holds the transactions and writes the audit
records. Functions that change a row expect the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from core.incidents.rules import Closeout, Incident, IncidentNote, IncidentStatus

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_COLUMNS = """id, title, status, opened_by, opened_at, slack_channel, slack_thread_ts,
    closed_by, closed_at, root_cause, affected_users, corrective_action, prevention_action,
    severity, commander, comms, incident_channel"""
_SELECT = f"SELECT {_COLUMNS} FROM incidents"  # noqa: S608 (constants only)
_NOTE_COLUMNS = "id, incident_id, author, text, created_at"


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
        severity=row["severity"],
        commander=row["commander"],
        comms=row["comms"],
        incident_channel=row["incident_channel"],
    )


def _note_from_row(row: Any) -> IncidentNote:
    return IncidentNote(
        id=row["id"],
        incident_id=row["incident_id"],
        author=row["author"],
        text=row["text"],
        created_at=row["created_at"],
    )


async def insert(conn: Conn, title: str, opened_by: str, now: datetime) -> Incident:
    row = await conn.fetchrow(
        f"""INSERT INTO incidents (title, opened_by, opened_at) VALUES ($1, $2, $3)
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
        title,
        opened_by,
        now,
    )
    return incident_from_row(row)


async def get(conn: Conn, incident_id: int, *, lock: bool = False) -> Incident | None:
    """One incident; with `lock`, its row locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        _SELECT + " WHERE id = $1" + (" FOR UPDATE" if lock else ""), incident_id
    )
    return None if row is None else incident_from_row(row)


async def adopt_thread(conn: Conn, incident_id: int, channel: str, ts: str) -> bool:
    """Set the incident's Slack thread only if it has none; False when it has one."""
    done = await conn.execute(
        """UPDATE incidents SET slack_channel = $2, slack_thread_ts = $3
            WHERE id = $1 AND slack_thread_ts IS NULL""",
        incident_id,
        channel,
        ts,
    )
    return bool(done != "UPDATE 0")


async def list_open(conn: Conn, *, lock: bool = False) -> list[Incident]:
    """Open incidents, oldest first; with `lock`, their rows locked."""
    rows = await conn.fetch(
        _SELECT + " WHERE status = 'open' ORDER BY id" + (" FOR UPDATE" if lock else "")
    )
    return [incident_from_row(r) for r in rows]


async def insert_note(
    conn: Conn, incident_id: int, author: str, text: str, now: datetime
) -> IncidentNote:
    row = await conn.fetchrow(
        f"""INSERT INTO incident_notes (incident_id, author, text, created_at)
            VALUES ($1, $2, $3, $4) RETURNING {_NOTE_COLUMNS}""",  # noqa: S608 (constants only)
        incident_id,
        author,
        text,
        now,
    )
    return _note_from_row(row)


async def mark_closed(
    conn: Conn, incident_id: int, closed_by: str, closeout: Closeout, now: datetime
) -> Incident:
    row = await conn.fetchrow(
        f"""UPDATE incidents SET status = 'closed', closed_by = $2, closed_at = $3,
                root_cause = $4, affected_users = $5, corrective_action = $6,
                prevention_action = $7
            WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608 (constants only)
        incident_id,
        closed_by,
        now,
        closeout.root_cause,
        closeout.affected_users,
        closeout.corrective_action,
        closeout.prevention_action,
    )
    return incident_from_row(row)


async def notes(conn: Conn, incident_id: int) -> list[IncidentNote]:
    """An incident's notes, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {_NOTE_COLUMNS} FROM incident_notes
            WHERE incident_id = $1 ORDER BY id""",  # noqa: S608 (constants only)
        incident_id,
    )
    return [_note_from_row(r) for r in rows]


async def set_severity(conn: Conn, incident_id: int, severity: int) -> Incident:
    row = await conn.fetchrow(
        f"UPDATE incidents SET severity = $2 WHERE id = $1 RETURNING {_COLUMNS}",  # noqa: S608
        incident_id,
        severity,
    )
    return incident_from_row(row)


async def set_role(conn: Conn, incident_id: int, role: str, user: str) -> Incident:
    column = {"commander": "commander", "comms": "comms"}[role]  # never caller text
    row = await conn.fetchrow(
        f"UPDATE incidents SET {column} = $2 WHERE id = $1 RETURNING {_COLUMNS}",  # noqa: S608
        incident_id,
        user,
    )
    return incident_from_row(row)


async def set_channel(conn: Conn, incident_id: int, channel: str) -> None:
    await conn.execute(
        "UPDATE incidents SET incident_channel = $2 WHERE id = $1", incident_id, channel
    )


async def by_channel(conn: Conn, channel: str) -> Incident | None:
    """The incident whose own channel, or whose thread's channel and ts, is `channel`."""
    row = await conn.fetchrow(_SELECT + " WHERE incident_channel = $1 ORDER BY id DESC", channel)
    return None if row is None else incident_from_row(row)


async def by_thread(conn: Conn, channel: str, thread_ts: str) -> Incident | None:
    row = await conn.fetchrow(
        _SELECT + " WHERE slack_channel = $1 AND slack_thread_ts = $2", channel, thread_ts
    )
    return None if row is None else incident_from_row(row)


async def recent(conn: Conn, limit: int = 20) -> list[Incident]:
    """Open incidents first, then the latest closed ones."""
    rows = await conn.fetch(_SELECT + " ORDER BY (status = 'open') DESC, id DESC LIMIT $1", limit)
    return [incident_from_row(r) for r in rows]
