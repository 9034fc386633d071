"""The service's pool releases connections without asyncpg's reset query; what holds session
state goes through `db.session`, which resets it, even when the connection broke."""

from __future__ import annotations

import asyncpg

from core import db

KEY = 424_242


async def lock_is_free(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", KEY))
        if taken:
            await conn.execute("SELECT pg_advisory_unlock($1)", KEY)
        return taken


async def test_a_session_gives_back_its_advisory_lock_and_settings(database_url: str) -> None:
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with db.session(pool) as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", KEY)
            await conn.execute("SET work_mem = '77MB'")
        # one connection in the pool: the next acquire gets the same backend, reset
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") != "77MB"
        assert await lock_is_free(pool)
    finally:
        await pool.close()


async def test_a_plain_acquire_skips_the_reset(database_url: str) -> None:
    """What `session` exists for: a plain release leaves session state behind."""
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET work_mem = '77MB'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == "77MB"
    finally:
        await pool.close()


async def test_a_session_whose_backend_died_ends_quietly_and_the_pool_recovers(
    database_url: str,
) -> None:
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    killer = await db.connect(database_url)
    try:
        async with db.session(pool) as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", KEY)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        assert await lock_is_free(pool)  # went with the backend; the pool reconnected
    finally:
        await killer.close()
        await pool.close()
