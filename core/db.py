"""The PostgreSQL pool and the numbered `.sql` migrations.

Migrations are the files `core/migrations/NNNN_name.sql`, applied in order, each in its own
transaction, and recorded in `schema_migrations`. `migrate()` holds a session advisory lock
for its whole run, so two processes starting at once apply each migration exactly once: the
second waits, then finds nothing left to do. The seed (`seed.sql`) runs on every migrate and
is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Literal, TypeAlias

import asyncpg

# What a failing database raises: server errors, a lost or broken connection (including a
# pooled connection terminated by the server before asyncpg saw the socket close, which
# raises InternalClientError), a timeout.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Tables whose rows remember the Slack message they are discussed in.
ThreadTable: TypeAlias = Literal["adjustments", "incidents"]

MIGRATE_LOCK_KEY = 7_305_101_001  # pg_advisory_lock key owned by `payops migrate`
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def in_transaction(self) -> bool:
        """False for a migration marked `-- payops: no transaction` on its first line: one
        statement that cannot run in a transaction (`CREATE INDEX CONCURRENTLY`)."""
        return not self.sql.startswith(NO_TRANSACTION)


NO_TRANSACTION = "-- payops: no transaction\n"


def migrations() -> list[Migration]:
    """The migrations shipped with payops, in order."""
    found = []
    for entry in resources.files("core.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def latest_version() -> int:
    return migrations()[-1].version


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with payops' codecs (jsonb as Python values)."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


async def _reset(conn: asyncpg.Connection) -> None:
    """On release, asyncpg has already rolled back an open transaction and dropped
    listeners. The rest of its default reset (unlock advisory locks, CLOSE ALL, UNLISTEN,
    RESET ALL) is one more round trip on every release, for session state the service
    never leaves behind: code that takes session-level state uses `session()` instead."""


@contextlib.asynccontextmanager
async def session(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection for work that holds session state (advisory locks, SET, LISTEN):
    the full reset runs before it goes back to the pool."""
    async with pool.acquire() as conn:
        try:
            yield conn
        finally:
            try:
                if not conn.is_closed():
                    await conn.execute(conn.get_reset_query())
            except DATABASE_ERRORS:
                # what cannot be reset is closed, and its locks go with it (a connection that
                # broke is already out of the pool's hands)
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 20, command_timeout: float = 30
) -> asyncpg.Pool:
    """The service's pool. Connections speak UTC and decode jsonb to Python values; a
    statement without an answer in `command_timeout` seconds raises TimeoutError."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset,
        server_settings={"timezone": "UTC", "application_name": "payops"},
        command_timeout=command_timeout,
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class MigrateResult:
    applied: list[int]
    current: int


async def migrate(dsn: str) -> MigrateResult:
    """Apply pending migrations and the seed. Idempotent and safe to run concurrently."""
    async with migrate_lock(dsn) as conn:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for m in migrations():
            if m.version in done:
                continue
            if m.in_transaction:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await _applied(conn, m)
            else:  # written to be run again if recording it does not happen
                await _drop_invalid_indexes(conn, m)
                await conn.execute(m.sql)
                await _applied(conn, m)
            applied.append(m.version)
        seed = resources.files("core.migrations").joinpath("seed.sql").read_text("utf-8")
        async with conn.transaction():
            await conn.execute(seed)
        current = await conn.fetchval("SELECT max(version) FROM schema_migrations")
        return MigrateResult(applied=applied, current=int(current or 0))


MIGRATE_LOCK_POLL_SECONDS = 0.1


@contextlib.asynccontextmanager
async def migrate_lock(
    dsn: str, *, within: float | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A session of its own holding `MIGRATE_LOCK_KEY` for the block: `payops migrate` and
    `payops restore` run one at a time. The lock is polled (`pg_try_advisory_lock`), never
    waited for inside a statement: a waiting statement is an open transaction with a
    snapshot, which `CREATE INDEX CONCURRENTLY` in the holder's migration waits for in turn
    (a deadlock: PostgreSQL aborts one of the two, and an aborted concurrent build leaves an
    invalid index behind). `within`: give up after that many seconds (TimeoutError)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(within):
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATE_LOCK_KEY):
                    break
                await asyncio.sleep(MIGRATE_LOCK_POLL_SECONDS)
        try:
            yield conn
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
    finally:
        await conn.close()


# The indexes a no-transaction migration builds (`CREATE INDEX CONCURRENTLY IF NOT EXISTS x`).
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE
)


async def _drop_invalid_indexes(conn: asyncpg.Connection, m: Migration) -> None:
    """A concurrent build that was interrupted (killed, cancelled, failed) leaves its index
    behind, invalid: never used by a query, yet kept up to date by every write, and `IF NOT
    EXISTS` would keep it. Drop it, so the migration builds it again."""
    for name in _CONCURRENT_INDEX.findall(m.sql):
        invalid = await conn.fetchval(
            """SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace""",
            name,
        )
        if invalid:
            await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS public."{name}"')


async def _applied(conn: asyncpg.Connection, m: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
    )


async def schema_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The highest applied migration, or 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def set_slack_thread(
    conn: asyncpg.Connection | asyncpg.Pool, table: ThreadTable, row_id: int, channel: str, ts: str
) -> bool:
    """Remember the Slack message (channel, ts) where row `row_id` of `table` is discussed, so
    the bot can reply or update it later. False when no row has that id."""
    # `table` is one of two literals, never input: safe to splice into the statement
    done = await conn.execute(
        f"UPDATE {table} SET slack_channel = $2, slack_thread_ts = $3 WHERE id = $1",  # noqa: S608
        row_id,
        channel,
        ts,
    )
    return bool(done != "UPDATE 0")
