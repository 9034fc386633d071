"""The timeline follower: reads the audit log past a durable position and writes each open
incident's timeline (the rules are `core.incidents.timeline`).

A round seals the audit log first (`audit.seal`: committed records get their `seq`, in
commit order — so a record committed late is never passed by), then, in one transaction,
reads the records after the follower's position, appends their timeline entries and moves
the position past them. A crash between rounds loses nothing and writes nothing twice (the
position moves with the entries; an entry is unique per incident and audit record).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from core import audit
from core.incidents import timeline_store as tstore
from core.incidents.timeline import assign

FOLLOWER = "incident_timeline"
BATCH = 500
# Audit actions whose change shows on the Slack App Home (refresh its recent viewers).
HOME_ACTIONS = ("gate.", "adjustment.", "recon.", "incident.", "smoke.run")


@dataclass
class FollowReport:
    read: int = 0
    appended: int = 0
    position: int = 0
    home_changed: bool = False
    incidents: set[int] = field(default_factory=set)


async def follow(pool: asyncpg.Pool, *, batch: int = BATCH) -> FollowReport:
    """One round: every sealed record after the position, appended where it belongs."""
    await audit.seal(pool)
    report = FollowReport()
    async with pool.acquire() as conn, conn.transaction():
        report.position = await tstore.position(conn, FOLLOWER)
        if await _pass_when_no_incident(conn, report):
            return report
        rows = await tstore.audit_after(conn, report.position, batch)
        if not rows:
            return report
        spans = await tstore.spans(conn, report.position)
        for incident_id, row, line in assign(rows, spans):
            if await tstore.insert_entry(conn, incident_id, row, line) is not None:
                report.appended += 1
                report.incidents.add(incident_id)
        report.read = len(rows)
        report.position = rows[-1].seq
        report.home_changed = any(r.action.startswith(HOME_ACTIONS) for r in rows)
        await tstore.advance(conn, FOLLOWER, report.position)
    return report


async def follow_all(pool: asyncpg.Pool) -> FollowReport:
    """Rounds until the log is read to its end (tests, `timeline` on the CLI)."""
    total = FollowReport()
    while True:
        report = await follow(pool)
        total.read += report.read
        total.appended += report.appended
        total.position = report.position
        total.home_changed |= report.home_changed
        total.incidents |= report.incidents
        if report.read < BATCH:
            return total


async def _pass_when_no_incident(conn: asyncpg.Connection, report: FollowReport) -> bool:
    """With no incident open past the position, no record can join a timeline: move past
    all of them without reading them (the usual case, and most records are purchases).

    The records are counted before the incidents are looked up, so an incident opened by a
    record counted here is seen (the lookup's snapshot is the later one): then the round
    reads the records as usual."""
    passed = await tstore.records_after(conn, report.position, HOME_ACTIONS)
    if passed.count == 0:
        return True
    if await tstore.spans(conn, report.position):
        return False
    report.read = passed.count
    report.position = passed.last
    report.home_changed = passed.home_changed
    await tstore.advance(conn, FOLLOWER, report.position)
    return True
