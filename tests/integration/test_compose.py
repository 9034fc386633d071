"""The composition root's own background work: sealing the audit log without the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from core import audit
from core.audit import Actor
from payops import compose
from payops.serving import listening
from tests.support import make_settings


@contextlib.asynccontextmanager
async def serving_after_one_row(database_url: str, **overrides: Any) -> AsyncIterator[asyncpg.Pool]:
    """The service without the scheduler, started with one unsealed audit row, which is
    sealed on entry: so the sealing loop has run once and is now waiting."""
    settings = make_settings(scheduler_enabled=False, **overrides)
    async with compose.services(settings, database_url, check_chain=False) as running:
        pool = running.services.pool
        await record_row(pool)
        assert await unsealed(pool) == 1
        async with listening(compose.service_app(running), "127.0.0.1", 0):
            await until_sealed(pool)
            yield pool


async def record_row(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await audit.record(conn, Actor("tester", "system"), action="test.seal", subject="test")


async def unsealed(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM audit_log WHERE seq IS NULL"))


async def until_sealed(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(10):
            while True:
                if not await unsealed(pool):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError("the audit log was not sealed within 10 s") from None


async def test_service_without_scheduler_waits_the_configured_interval_between_seals(
    database_url: str,
) -> None:
    async with serving_after_one_row(database_url, audit_seal_interval_seconds=3600) as pool:
        await record_row(pool)
        await asyncio.sleep(1.5)  # longer than any interval the service might wrongly use
        assert await unsealed(pool) == 1


async def test_service_without_scheduler_seals_again_after_a_short_interval(
    database_url: str,
) -> None:
    async with serving_after_one_row(database_url, audit_seal_interval_seconds=0.2) as pool:
        await record_row(pool)
        await until_sealed(pool)
