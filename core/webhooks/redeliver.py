"""Deliveries an operator asks for again: one event (`retry`), or every event since a time
(`replay`). Each is one transaction with its audit record; the events keep their ids, so a
receiver that already had one recognises it by `Payops-Event-Id`.

The delivery loop (`service.run`) sends them on its next round, in order per subject as
always: an event retried behind an earlier undelivered one of its subject waits for it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from core import audit
from core.audit import Actor
from core.errors import NotFound, Unprocessable
from core.webhooks import store


async def retry_event(pool: asyncpg.Pool, actor: Actor, event_id: uuid.UUID) -> int:
    """Deliver `event_id` again now to every endpoint it was written for, dead or
    delivered; how many deliveries that is."""
    async with pool.acquire() as conn, conn.transaction():
        if await store.event(conn, event_id) is None:
            raise NotFound(f"no webhook event {event_id}", code="unknown_event")
        before = await store.deliveries_of(conn, event_id)
        if not before:
            # Nothing to change: no endpoint was enabled when the event was written.
            raise Unprocessable(
                f"webhook event {event_id} has no deliveries: no endpoint was configured "
                "when it was written",
                code="no_deliveries",
            )
        count = await store.retry(conn, event_id)
        await audit.record(
            conn,
            actor,
            action="webhook.retry",
            subject=f"webhook:{event_id}",
            before={"deliveries": {d.endpoint: d.status for d in before}},
            after={"deliveries": {d.endpoint: "pending" for d in before}, "count": count},
        )
    return count


async def replay_since(pool: asyncpg.Pool, actor: Actor, since: datetime) -> int:
    """Deliver every event written since `since` again, with the same ids; how many
    deliveries that is (audited with the count, even when it is none)."""
    async with pool.acquire() as conn, conn.transaction():
        count = await store.replay(conn, since)
        await audit.record(
            conn,
            actor,
            action="webhook.replay",
            subject="webhooks",
            after={"since": since.isoformat(), "count": count},
        )
    return count
