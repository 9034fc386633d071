"""The timeline follower with no incident open: it moves past the audit log's records without
reading them, and still sees an incident opened among them."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from core import audit, incidents
from core.audit import Actor
from core.incidents import follow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ONCALL = Actor("OC1", "cli")
USER = Actor("alice", "api")


async def _records(pool: asyncpg.Pool, action: str, n: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for i in range(n):
            await audit.record(
                conn,
                USER,
                action=action,
                subject="gate:verify" if action.startswith("gate.") else f"intent:{i}",
                after={"i": i},
            )


async def _last_seq(pool: asyncpg.Pool) -> int:
    await audit.seal(pool)
    return int(await pool.fetchval("SELECT max(seq) FROM audit_log"))


async def test_with_no_incident_it_passes_every_record_and_appends_nothing(
    pool: asyncpg.Pool,
) -> None:
    await _records(pool, "intent.create", 1_200)  # more than one round's batch
    report = await follow(pool)
    assert report.read == 1_200
    assert report.position == await _last_seq(pool)
    assert report.appended == 0
    assert report.home_changed is False  # purchases do not change the App Home
    assert await pool.fetchval("SELECT count(*) FROM incident_timeline") == 0
    again = await follow(pool)
    assert (again.read, again.position) == (0, report.position)


async def test_passing_still_says_when_the_app_home_changed(pool: asyncpg.Pool) -> None:
    await _records(pool, "intent.create", 3)
    await _records(pool, "gate.verify.close", 1)
    report = await follow(pool)
    assert (report.read, report.home_changed) == (4, True)


async def test_an_incident_opened_among_the_records_gets_what_follows_it(
    pool: asyncpg.Pool,
) -> None:
    await _records(pool, "intent.create", 5)
    async with pool.acquire() as conn:
        opened = await incidents.open_incident(conn, ONCALL, "verify is slow", now=NOW)
    await _records(pool, "gate.verify.close", 1)
    report = await follow(pool)
    assert report.incidents == {opened.id}
    async with pool.acquire() as conn:
        timeline = await incidents.entries(conn, opened.id)
    assert [e.action for e in timeline] == ["incident.open", "gate.verify.close"]

    # Records after it, with the incident still open, join its timeline; once it is closed
    # the follower goes back to passing them.
    await _records(pool, "gate.verify.open", 1)
    assert (await follow(pool)).incidents == {opened.id}
    async with pool.acquire() as conn:
        assert len(await incidents.entries(conn, opened.id)) == 3


async def test_the_open_incidents_are_found_through_their_own_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                """EXPLAIN SELECT substring(subject FROM 10)::bigint, min(seq)
                   FROM audit_log
                   WHERE action IN ('incident.open', 'incident.close') AND seq IS NOT NULL
                     AND subject ~ '^incident:[0-9]+$'
                   GROUP BY 1"""
            )
        )
    assert "audit_log_incident_marks" in plan
