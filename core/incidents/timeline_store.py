"""SQL for the incident timeline (migration 0011): the audit log read in commit order, the
follower's position, timeline entries and their posts. Rows in, records out; no policy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from core.incidents.timeline import AuditRow, Described, Span, TimelineEntry

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_ENTRY = """t.id, t.incident_id, t.audit_id, t.at, t.actor, t.kind, t.text,
    a.source, a.action"""


def _json(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return dict(json.loads(value))
    return dict(value)


def _audit_row(r: Any) -> AuditRow:
    return AuditRow(
        id=r["id"],
        seq=r["seq"],
        at=r["at"],
        actor=r["actor"],
        source=r["source"],
        action=r["action"],
        subject=r["subject"],
        before=_json(r["before"]),
        after=_json(r["after"]),
    )


def _entry(r: Any) -> TimelineEntry:
    return TimelineEntry(
        id=r["id"],
        incident_id=r["incident_id"],
        audit_id=r["audit_id"],
        at=r["at"],
        actor=r["actor"],
        kind=r["kind"],
        text=r["text"],
        source=r["source"],
        action=r["action"],
    )


async def position(conn: asyncpg.Connection, name: str) -> int:
    """The follower's position (the last `seq` read), its row locked: one reader at a time."""
    value = await conn.fetchval("SELECT seq FROM audit_followers WHERE name = $1 FOR UPDATE", name)
    if value is None:
        await conn.execute(
            "INSERT INTO audit_followers (name) VALUES ($1) ON CONFLICT DO NOTHING", name
        )
        value = await conn.fetchval(
            "SELECT seq FROM audit_followers WHERE name = $1 FOR UPDATE", name
        )
    return int(value or 0)


async def advance(conn: asyncpg.Connection, name: str, seq: int) -> None:
    await conn.execute(
        "UPDATE audit_followers SET seq = $2, updated_at = now() WHERE name = $1", name, seq
    )


async def audit_after(conn: Conn, seq: int, limit: int) -> list[AuditRow]:
    """Sealed audit records after `seq`, in commit (seal) order."""
    rows = await conn.fetch(
        """SELECT id, seq, at, actor, source, action, subject, before, after FROM audit_log
           WHERE seq > $1 ORDER BY seq LIMIT $2""",
        seq,
        limit,
    )
    return [_audit_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Records:
    """The sealed audit records after a position, counted: how many, the last one's `seq`,
    and whether any has an action starting with one of the prefixes asked about."""

    count: int
    last: int
    home_changed: bool


async def records_after(conn: Conn, seq: int, prefixes: Sequence[str]) -> Records:
    """Sealed audit records after `seq`, counted (not read)."""
    patterns = [_escape_like(p) + "%" for p in prefixes]
    row = await conn.fetchrow(
        """SELECT count(*) AS n, coalesce(max(seq), $1) AS last,
                  coalesce(bool_or(action LIKE ANY($2::text[])), false) AS home
           FROM audit_log WHERE seq > $1""",
        seq,
        patterns,
    )
    assert row is not None
    return Records(int(row["n"]), int(row["last"]), bool(row["home"]))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def spans(conn: Conn, after: int) -> dict[int, Span]:
    """Each incident open at or after `seq` `after`: its open and close records' seq."""
    rows = await conn.fetch(
        """SELECT substring(subject FROM 10)::bigint AS incident_id,
                  min(seq) FILTER (WHERE action = 'incident.open') AS opened,
                  min(seq) FILTER (WHERE action = 'incident.close') AS closed
           FROM audit_log
           WHERE action IN ('incident.open', 'incident.close') AND seq IS NOT NULL
             AND subject ~ '^incident:[0-9]+$'
           GROUP BY 1""",
    )
    return {
        r["incident_id"]: Span(r["opened"], r["closed"])
        for r in rows
        if r["opened"] is not None and (r["closed"] is None or r["closed"] > after)
    }


async def insert_entry(
    conn: asyncpg.Connection, incident_id: int, row: AuditRow, line: Described
) -> int | None:
    """Append one entry; None when the record is already on that incident's timeline."""
    value = await conn.fetchval(
        """INSERT INTO incident_timeline (incident_id, audit_id, at, actor, kind, text)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (incident_id, audit_id) DO NOTHING RETURNING id""",
        incident_id,
        row.id,
        row.at,
        row.actor,
        line.kind,
        line.text[:4000],
    )
    return None if value is None else int(value)


async def entries(conn: Conn, incident_id: int) -> list[TimelineEntry]:
    """An incident's timeline, in the audit log's order."""
    rows = await conn.fetch(
        f"""SELECT {_ENTRY} FROM incident_timeline t JOIN audit_log a ON a.id = t.audit_id
            WHERE t.incident_id = $1 ORDER BY a.seq, t.id""",  # noqa: S608 (constants only)
        incident_id,
    )
    return [_entry(r) for r in rows]


async def unposted(conn: Conn, limit: int = 50) -> list[tuple[TimelineEntry, str, str]]:
    """Entries not yet posted, of incidents with a Slack thread: (entry, channel, thread ts)."""
    rows = await conn.fetch(
        f"""SELECT {_ENTRY}, i.slack_channel, i.slack_thread_ts
            FROM incident_timeline t
            JOIN audit_log a ON a.id = t.audit_id
            JOIN incidents i ON i.id = t.incident_id
            LEFT JOIN incident_timeline_posts p ON p.entry_id = t.id
            WHERE p.entry_id IS NULL AND i.slack_thread_ts IS NOT NULL
            ORDER BY t.id LIMIT $1""",  # noqa: S608 (constants only)
        limit,
    )
    return [(_entry(r), r["slack_channel"], r["slack_thread_ts"]) for r in rows]


async def mark_posted(conn: Conn, entry_id: int, channel: str, ts: str) -> None:
    await conn.execute(
        """INSERT INTO incident_timeline_posts (entry_id, channel, ts) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING""",
        entry_id,
        channel,
        ts,
    )


async def note_opener(conn: Conn, user: str, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO home_openers (user_id, opened_at) VALUES ($1, $2)
           ON CONFLICT (user_id) DO UPDATE SET opened_at = EXCLUDED.opened_at""",
        user,
        now,
    )


async def recent_openers(conn: Conn, since: datetime) -> list[str]:
    rows = await conn.fetch(
        "SELECT user_id FROM home_openers WHERE opened_at >= $1 ORDER BY user_id", since
    )
    return [r["user_id"] for r in rows]


async def mark_published(conn: Conn, user: str, now: datetime) -> None:
    await conn.execute("UPDATE home_openers SET published_at = $2 WHERE user_id = $1", user, now)
