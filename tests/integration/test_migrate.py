"""`payops migrate`: idempotent, and safe when two processes run it at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from core import db


async def test_concurrent_migrations_apply_each_version_once(empty_database_url: str) -> None:
    results = await asyncio.gather(*(db.migrate(empty_database_url) for _ in range(4)))
    applied = sorted(v for r in results for v in r.applied)
    assert applied == list(range(1, db.latest_version() + 1))
    assert {r.current for r in results} == {db.latest_version()}
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM accounts WHERE kind = 'system'") == 3
        assert await conn.fetchval("SELECT count(*) FROM gate_switches") == 2
    finally:
        await conn.close()


async def test_migrate_twice_changes_nothing(empty_database_url: str) -> None:
    await db.migrate(empty_database_url)
    again = await db.migrate(empty_database_url)
    assert again.applied == []
    assert again.current == db.latest_version()


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in db.migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_a_migration_marked_no_transaction_runs_outside_one(
    empty_database_url: str,
) -> None:
    outside = [m for m in db.migrations() if not m.in_transaction]
    assert [m.name for m in outside] == ["incident_marks_index"]  # CREATE INDEX CONCURRENTLY
    await db.migrate(empty_database_url)
    conn = await asyncpg.connect(empty_database_url)
    try:
        valid = await conn.fetchval(
            """SELECT i.indisvalid FROM pg_index i
               WHERE i.indexrelid = 'audit_log_incident_marks'::regclass"""
        )
        assert valid is True
        # Run again (as if recording it had not happened): nothing changes, nothing fails.
        await conn.execute(outside[0].sql)
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", outside[0].version)
    finally:
        await conn.close()
    assert (await db.migrate(empty_database_url)).applied == [outside[0].version]


async def test_an_index_left_invalid_by_an_interrupted_build_is_built_again(
    empty_database_url: str,
) -> None:
    """A concurrent build that fails leaves an invalid index of that name, which `IF NOT
    EXISTS` alone would keep: `payops migrate` again drops it and builds the index."""
    [outside] = [m for m in db.migrations() if not m.in_transaction]
    await db.migrate(empty_database_url)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute("DROP INDEX CONCURRENTLY audit_log_incident_marks")
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", outside.version)
        # Two gate switches share the constant: the build fails half way, as when interrupted.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY audit_log_incident_marks ON gate_switches ((1))"
            )
        index = """SELECT i.indisvalid, i.indrelid::regclass::text AS on_table FROM pg_index i
                   WHERE i.indexrelid = 'audit_log_incident_marks'::regclass"""
        left = await conn.fetchrow(index)
        assert (left["indisvalid"], left["on_table"]) == (False, "gate_switches")

        assert (await db.migrate(empty_database_url)).applied == [outside.version]
        built = await conn.fetchrow(index)
        assert (built["indisvalid"], built["on_table"]) == (True, "audit_log")
    finally:
        await conn.close()
