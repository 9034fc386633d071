"""Signed requests seen recently, shared by every replica: a signed request runs once.

Slack signs a request with its timestamp, and a signature is accepted for five minutes, so a
request captured (or sent twice) within that window would pass the signature check again.
The first replica to record a signature runs the request; any later sight of it, on any
replica, is refused. Rows expire with the signature and are pruned.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def first_sight(pool: asyncpg.Pool, signature: str, expires_at: datetime) -> bool:
    """Record `signature`; False when it was recorded before (by any replica)."""
    inserted = await pool.fetchval(
        """INSERT INTO slack_requests_seen (signature, expires_at) VALUES ($1, $2)
           ON CONFLICT (signature) DO NOTHING RETURNING true""",
        signature,
        expires_at,
    )
    return bool(inserted)


async def prune(pool: asyncpg.Pool, now: datetime) -> int:
    """Delete the signatures that expired before `now`; returns how many."""
    deleted = await pool.execute("DELETE FROM slack_requests_seen WHERE expires_at < $1", now)
    return int(deleted.split()[-1])
