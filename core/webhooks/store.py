"""SQL of the webhook outbox: endpoints, events, deliveries (no policy here)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from core.webhooks.rules import Event

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to one endpoint."""

    event: Event
    endpoint: str
    status: str  # pending | delivered | dead
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


def _event(row: Any) -> Event:
    return Event(
        id=row["id"],
        seq=row["seq"],
        type=row["type"],
        subject=row["subject"],
        # a plain connection (no jsonb codec) reads the text
        data=json.loads(row["data"]) if isinstance(row["data"], str) else dict(row["data"]),
        created_at=row["created_at"],
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        event=_event(row),
        endpoint=row["endpoint"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
    )


async def sync_endpoints(conn: asyncpg.Connection, urls: Sequence[str]) -> None:
    """The configured endpoints are enabled, every other one disabled (its undelivered
    events wait in case it comes back)."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO webhook_endpoints (url) SELECT unnest($1::text[])
               ON CONFLICT (url) DO UPDATE SET enabled = true""",
            list(urls),
        )
        await conn.execute(
            "UPDATE webhook_endpoints SET enabled = false WHERE NOT (url = ANY($1::text[]))",
            list(urls),
        )


async def enqueue(
    conn: asyncpg.Connection, type_: str, subject: str, data: dict[str, Any]
) -> uuid.UUID:
    """Write an event in the caller's transaction (a trigger fans it out to the endpoints)."""
    event_id: uuid.UUID = await conn.fetchval(
        # Sent as text and cast by the server: the same object whatever jsonb codec the
        # connection has (payops' pool encodes jsonb itself; a plain connection does not).
        "INSERT INTO webhook_events (type, subject, data)"
        " VALUES ($1, $2, $3::text::jsonb) RETURNING id",
        type_,
        subject,
        json.dumps(data),
    )
    return event_id


# Constant text only: every value is a bind parameter.
_SELECT = """SELECT e.id, e.seq, e.type, e.subject, e.data, e.created_at,
                    d.endpoint, d.status, d.attempts, d.next_attempt_at, d.last_error
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"""


async def due(db: Db, endpoint: str, limit: int) -> list[Delivery]:
    """Deliveries to `endpoint` whose time has come, each the oldest undelivered event of
    its subject (a later event of a subject waits for the earlier one: in order)."""
    rows = await db.fetch(
        _SELECT  # noqa: S608 (constant text)
        + """ WHERE d.endpoint = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
              AND NOT EXISTS (
                  SELECT 1 FROM webhook_deliveries d2 JOIN webhook_events e2 ON e2.id = d2.event_id
                  WHERE d2.endpoint = d.endpoint AND d2.status = 'pending'
                    AND e2.subject = e.subject AND e2.seq < e.seq)
              ORDER BY e.seq LIMIT $2""",
        endpoint,
        limit,
    )
    return [_delivery(r) for r in rows]


async def enabled_endpoints(db: Db) -> list[str]:
    rows = await db.fetch("SELECT url FROM webhook_endpoints WHERE enabled ORDER BY url")
    return [r["url"] for r in rows]


async def delivered(db: Db, event_id: uuid.UUID, endpoint: str) -> None:
    await db.execute(
        """UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(),
               attempts = attempts + 1, last_error = NULL
           WHERE event_id = $1 AND endpoint = $2 AND status = 'pending'""",
        event_id,
        endpoint,
    )


async def failed(
    db: Db, event_id: uuid.UUID, endpoint: str, error: str, *, retry_at: datetime | None
) -> None:
    """A failed attempt: try again at `retry_at`, or give up (dead) when it is None."""
    await db.execute(
        """UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $3,
               status = CASE WHEN $4::timestamptz IS NULL THEN 'dead' ELSE 'pending' END,
               next_attempt_at = coalesce($4, next_attempt_at)
           WHERE event_id = $1 AND endpoint = $2 AND status = 'pending'""",
        event_id,
        endpoint,
        error[:500],
        retry_at,
    )


async def deliveries(
    db: Db, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[Delivery]:
    """The newest deliveries first, optionally of one status or since a time."""
    rows = await db.fetch(
        _SELECT
        + """ WHERE ($1::text IS NULL OR d.status = $1)
                AND ($2::timestamptz IS NULL OR e.created_at >= $2)
              ORDER BY e.seq DESC LIMIT $3""",
        status,
        since,
        limit,
    )
    return [_delivery(r) for r in rows]


async def event(db: Db, event_id: uuid.UUID) -> Event | None:
    """One event of the outbox, whatever became of its deliveries."""
    row = await db.fetchrow(
        "SELECT id, seq, type, subject, data, created_at FROM webhook_events WHERE id = $1",
        event_id,
    )
    return None if row is None else _event(row)


async def deliveries_of(db: Db, event_id: uuid.UUID) -> list[Delivery]:
    """Every delivery of one event, one per endpoint it was written for."""
    rows = await db.fetch(
        _SELECT + " WHERE e.id = $1 ORDER BY d.endpoint",
        event_id,
    )
    return [_delivery(r) for r in rows]


async def counts(db: Db) -> dict[str, int]:
    """How many deliveries are in each status (statuses with none are 0)."""
    rows = await db.fetch("SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status")
    found = {r["status"]: int(r["n"]) for r in rows}
    return {s: found.get(s, 0) for s in ("dead", "pending", "delivered")}


async def retry(conn: asyncpg.Connection, event_id: uuid.UUID) -> int:
    """Deliver `event_id` again to every endpoint now (a dead one too); how many deliveries."""
    status = await conn.execute(
        """UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),
               delivered_at = NULL
           WHERE event_id = $1""",
        event_id,
    )
    return int(status.split()[-1])


async def replay(conn: asyncpg.Connection, since: datetime) -> int:
    """Deliver every event written since `since` again (same event ids); how many deliveries."""
    status = await conn.execute(
        """UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(),
               delivered_at = NULL
           FROM webhook_events e WHERE e.id = d.event_id AND e.created_at >= $1""",
        since,
    )
    return int(status.split()[-1])


async def depth(db: Db) -> int:
    """Deliveries not yet made (the outbox's depth)."""
    return int(
        await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
    )
