"""Incident records against the real database: open, note, close with the closeout, audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core import incidents
from core.audit import Actor
from core.errors import Conflict, InvalidInput, NotFound
from core.incidents import Closeout, IncidentStatus, closeout

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ONCALL = Actor("OC1", "slack")
CLOSEOUT = closeout(
    root_cause="duplicate verify race",
    affected_users="alice",
    corrective_action="reversed ledger tx 12",
    prevention_action="row lock on the intent",
)


async def _audit(pool: asyncpg.Pool, incident_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id", f"incident:{incident_id}"
    )
    return [r["action"] for r in rows]


async def test_incident_lifecycle_is_recorded_and_audited(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        opened = await incidents.open_incident(conn, ONCALL, " duplicate credits ", now=NOW)
        assert (opened.title, opened.status, opened.opened_by) == (
            "duplicate credits",
            IncidentStatus.OPEN,
            "OC1",
        )
        first = await incidents.add_note(conn, ONCALL, "gated verify", now=NOW)
        await incidents.add_note(
            conn, Actor("OC2", "cli"), "found tx 12", now=NOW, incident_id=opened.id
        )
        closed = await incidents.close_incident(
            conn, Actor("M1", "slack"), CLOSEOUT, now=NOW + timedelta(hours=2)
        )
    assert first.incident_id == opened.id
    assert closed.status is IncidentStatus.CLOSED
    assert (closed.closed_by, closed.closed_at) == ("M1", NOW + timedelta(hours=2))
    assert closed.closeout == CLOSEOUT
    assert [(n.author, n.text) for n in await incidents.notes(pool, opened.id)] == [
        ("OC1", "gated verify"),
        ("OC2", "found tx 12"),
    ]
    assert await incidents.list_open(pool) == []
    assert await incidents.get(pool, opened.id) == closed
    assert await _audit(pool, opened.id) == [
        "incident.open",
        "incident.note",
        "incident.note",
        "incident.close",
    ]
    row = await pool.fetchrow("SELECT actor, after FROM audit_log WHERE action = 'incident.close'")
    assert row is not None
    assert row["actor"] == "M1"
    assert row["after"]["prevention_action"] == "row lock on the intent"


async def test_close_needs_the_whole_closeout(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        opened = await incidents.open_incident(conn, ONCALL, "missing credits", now=NOW)
        partial = Closeout("race", "alice", "re-credited", "")
        with pytest.raises(InvalidInput, match="prevention action") as caught:
            await incidents.close_incident(conn, ONCALL, partial, now=NOW)
    assert caught.value.code == "closeout_incomplete"
    still = await incidents.get(pool, opened.id)
    assert still is not None
    assert still.status is IncidentStatus.OPEN
    # and the database refuses a closed incident without it, whatever SQL is sent
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            """UPDATE incidents SET status = 'closed', closed_by = 'x', closed_at = now(),
                   root_cause = 'r', affected_users = 'a', corrective_action = 'c'
               WHERE id = $1""",
            opened.id,
        )


async def test_unnamed_incident_must_be_the_only_open_one(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(NotFound) as none:
            await incidents.add_note(conn, ONCALL, "hello", now=NOW)
        assert none.value.code == "no_open_incident"
        a = await incidents.open_incident(conn, ONCALL, "a", now=NOW)
        b = await incidents.open_incident(conn, ONCALL, "b", now=NOW)
        with pytest.raises(Conflict) as several:
            await incidents.add_note(conn, ONCALL, "which?", now=NOW)
        assert several.value.code == "several_open_incidents"
        with pytest.raises(Conflict):
            await incidents.close_incident(conn, ONCALL, CLOSEOUT, now=NOW)
        await incidents.close_incident(conn, ONCALL, CLOSEOUT, now=NOW, incident_id=a.id)
        note = await incidents.add_note(conn, ONCALL, "only b is left", now=NOW)
    assert note.incident_id == b.id
    assert [i.id for i in await incidents.list_open(pool)] == [b.id]


async def test_closed_incident_takes_no_notes_and_no_second_close(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        opened = await incidents.open_incident(conn, ONCALL, "x", now=NOW)
        await incidents.close_incident(conn, ONCALL, CLOSEOUT, now=NOW, incident_id=opened.id)
        with pytest.raises(Conflict) as noted:
            await incidents.add_note(conn, ONCALL, "late", now=NOW, incident_id=opened.id)
        assert noted.value.code == "incident_closed"
        with pytest.raises(Conflict):
            await incidents.close_incident(conn, ONCALL, CLOSEOUT, now=NOW, incident_id=opened.id)
        with pytest.raises(NotFound) as unknown:
            await incidents.add_note(conn, ONCALL, "?", now=NOW, incident_id=999)
        assert unknown.value.code == "incident_not_found"
    with pytest.raises(asyncpg.CheckViolationError, match="not open"):
        await pool.execute(
            "INSERT INTO incident_notes (incident_id, author, text) VALUES ($1, 'x', 'y')",
            opened.id,
        )
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("UPDATE incidents SET root_cause = 'other' WHERE id = $1", opened.id)
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM incidents")
    assert await _audit(pool, opened.id) == ["incident.open", "incident.close"]


async def test_title_is_required(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(InvalidInput):
            await incidents.open_incident(conn, ONCALL, "  ", now=NOW)
    assert await pool.fetchval("SELECT count(*) FROM incidents") == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_notes_are_append_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await incidents.open_incident(conn, ONCALL, "x", now=NOW)
        await incidents.add_note(conn, ONCALL, "first", now=NOW)
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("UPDATE incident_notes SET text = 'edited'")
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM incident_notes")


async def test_note_racing_a_close_lands_before_it_or_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        opened = await incidents.open_incident(conn, ONCALL, "race", now=NOW)

    async def note(i: int) -> object:
        async with pool.acquire() as conn:
            return await incidents.add_note(conn, ONCALL, f"note {i}", now=NOW)

    async def close() -> object:
        async with pool.acquire() as conn:
            return await incidents.close_incident(conn, ONCALL, CLOSEOUT, now=NOW)

    results = await asyncio.gather(
        *(note(i) for i in range(5)),
        close(),
        *(note(i) for i in range(5, 10)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, (Conflict, NotFound)) for r in refused), refused
    closed_at = await pool.fetchval(
        "SELECT id FROM audit_log WHERE action = 'incident.close' AND subject = $1",
        f"incident:{opened.id}",
    )
    last_note = await pool.fetchval("SELECT max(id) FROM audit_log WHERE action = 'incident.note'")
    assert last_note is None or last_note < closed_at
    assert len(await incidents.notes(pool, opened.id)) == 10 - len(refused)


async def test_thread_link(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        opened = await incidents.open_incident(conn, ONCALL, "x", now=NOW)
        await incidents.set_thread(conn, opened.id, "C9", "1700000000.1")
        await incidents.close_incident(conn, ONCALL, CLOSEOUT, now=NOW)
        # a closed incident's thread may still be re-linked (the bot re-posts its summary)
        await incidents.set_thread(conn, opened.id, "C9", "1700000000.2")
        with pytest.raises(NotFound):
            await incidents.set_thread(conn, 999, "C9", "1")
    got = await incidents.get(pool, opened.id)
    assert got is not None
    assert (got.slack_channel, got.slack_thread_ts) == ("C9", "1700000000.2")
    assert await incidents.get(pool, 999) is None
