from __future__ import annotations

import asyncpg

from core import db


async def test_migrated_database_has_seed(pool: asyncpg.Pool) -> None:
    names = {r["name"] for r in await pool.fetch("SELECT name FROM accounts WHERE kind='system'")}
    assert names == {"system:token_sales", "system:spend", "system:adjustments"}
    assert await db.schema_version(pool) == db.latest_version()
