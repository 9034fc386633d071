"""SQL for `alert_posts`: which reconciliation findings were announced in Slack, and where.

Each step is claimed in the database before anything is posted — a new finding by inserting
its row, an escalation or a resolution by stamping it — and the claim is released if the post
fails, so two runs (or two replicas) never announce the same thing twice, and a failed post
is tried again by the next run. A claim whose process died before posting goes stale after
`STALE_CLAIM` and may be taken again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import asyncpg

from core.recon.findings import FindingKind, Severity

STALE_CLAIM = timedelta(minutes=5)
# The kind of the drift pseudo-finding: alerted like a finding, never stored as one.
DRIFT_KIND: Final = "drift"

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
AlertKind: TypeAlias = FindingKind | Literal["drift"]


def alert_kind(text: str) -> AlertKind:
    """A stored alert's kind: a finding kind, or the drift pseudo-finding's."""
    return DRIFT_KIND if text == DRIFT_KIND else FindingKind(text)


@dataclass(frozen=True, slots=True)
class AlertItem:
    """What an alert says about one finding."""

    fingerprint: str
    kind: AlertKind
    severity: Severity
    summary: str
    triage: str | None = None  # what "Run triage" looks up


@dataclass(frozen=True, slots=True)
class AlertPost:
    item: AlertItem
    posted_at: datetime
    channel: str
    ts: str | None
    escalated_at: datetime | None
    escalated_ts: str | None
    resolved_at: datetime | None
    resolved_posted_at: datetime | None


def _post(row: Any) -> AlertPost:
    return AlertPost(
        item=AlertItem(
            row["fingerprint"],
            alert_kind(row["kind"]),
            Severity(row["severity"]),
            row["summary"],
            row["triage"],
        ),
        posted_at=row["posted_at"],
        channel=row["channel"],
        ts=row["ts"],
        escalated_at=row["escalated_at"],
        escalated_ts=row["escalated_ts"],
        resolved_at=row["resolved_at"],
        resolved_posted_at=row["resolved_posted_at"],
    )


async def claim_new(
    conn: Conn, items: Sequence[AlertItem], channel: str, now: datetime
) -> list[AlertItem]:
    """Claim the items not announced yet (or announced and since resolved: they are back, or
    whose claim went stale); returns the claimed ones, in the order given."""
    if not items:
        return []
    rows = await conn.fetch(
        """INSERT INTO alert_posts AS a (fingerprint, kind, severity, summary, triage,
                                         posted_at, channel)
           SELECT f, k, s, m, t, $6, $7
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                AS x(f, k, s, m, t)
           ON CONFLICT (fingerprint) DO UPDATE SET
               kind = EXCLUDED.kind, severity = EXCLUDED.severity, summary = EXCLUDED.summary,
               triage = EXCLUDED.triage, posted_at = EXCLUDED.posted_at,
               channel = EXCLUDED.channel, ts = NULL, escalated_at = NULL,
               escalated_ts = NULL, resolved_at = NULL, resolved_posted_at = NULL
           WHERE a.resolved_at IS NOT NULL OR (a.ts IS NULL AND a.posted_at < $8)
           RETURNING fingerprint""",
        [i.fingerprint for i in items],
        [str(i.kind) for i in items],
        [i.severity.value for i in items],
        [i.summary for i in items],
        [i.triage for i in items],
        now,
        channel,
        now - STALE_CLAIM,
    )
    claimed = {r["fingerprint"] for r in rows}
    return [i for i in items if i.fingerprint in claimed]


async def set_posted(conn: Conn, fingerprints: Sequence[str], channel: str, ts: str) -> None:
    await conn.execute(
        "UPDATE alert_posts SET channel = $2, ts = $3 WHERE fingerprint = ANY($1::text[])",
        list(fingerprints),
        channel,
        ts,
    )


async def release_new(conn: Conn, fingerprints: Sequence[str]) -> None:
    """Give up claims whose post failed: the next run claims them again."""
    await conn.execute(
        "DELETE FROM alert_posts WHERE fingerprint = ANY($1::text[]) AND ts IS NULL",
        list(fingerprints),
    )


async def mark_resolved(conn: Conn, fingerprints: Sequence[str], now: datetime) -> int:
    """Record that a run saw these resolved. One never announced has nothing to reply to."""
    if not fingerprints:
        return 0
    rows = await conn.fetch(
        """UPDATE alert_posts SET resolved_at = $2::timestamptz,
               resolved_posted_at = CASE WHEN ts IS NULL THEN $2::timestamptz END
           WHERE fingerprint = ANY($1::text[]) AND resolved_at IS NULL RETURNING 1""",
        list(fingerprints),
        now,
    )
    return len(rows)


async def claim_resolutions(conn: Conn, now: datetime) -> list[AlertPost]:
    """Resolved, announced findings whose resolution is not posted yet; stamped as posted."""
    rows = await conn.fetch(
        """UPDATE alert_posts SET resolved_posted_at = $1
           WHERE resolved_at IS NOT NULL AND resolved_posted_at IS NULL AND ts IS NOT NULL
           RETURNING *""",
        now,
    )
    return sorted((_post(r) for r in rows), key=lambda p: (p.posted_at, p.item.fingerprint))


async def release_resolutions(conn: Conn, fingerprints: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE alert_posts SET resolved_posted_at = NULL WHERE fingerprint = ANY($1::text[])",
        list(fingerprints),
    )


async def claim_escalations(
    conn: Conn, announced_before: datetime, now: datetime
) -> list[AlertPost]:
    """Announced findings still open since before `announced_before`, not escalated yet
    (info-level ones never are); stamped as escalated."""
    rows = await conn.fetch(
        """UPDATE alert_posts SET escalated_at = $2
           WHERE ts IS NOT NULL AND resolved_at IS NULL AND escalated_at IS NULL
             AND severity <> 'info' AND posted_at <= $1
           RETURNING *""",
        announced_before,
        now,
    )
    return sorted((_post(r) for r in rows), key=lambda p: (p.posted_at, p.item.fingerprint))


async def set_escalated(conn: Conn, fingerprints: Sequence[str], ts: str) -> None:
    await conn.execute(
        "UPDATE alert_posts SET escalated_ts = $2 WHERE fingerprint = ANY($1::text[])",
        list(fingerprints),
        ts,
    )


async def release_escalations(conn: Conn, fingerprints: Sequence[str]) -> None:
    await conn.execute(
        """UPDATE alert_posts SET escalated_at = NULL, escalated_ts = NULL
           WHERE fingerprint = ANY($1::text[])""",
        list(fingerprints),
    )


async def of_message(conn: Conn, ts: str) -> list[AlertPost]:
    """The findings a posted message (an announcement or an escalation) is about."""
    rows = await conn.fetch(
        "SELECT * FROM alert_posts WHERE ts = $1 OR escalated_ts = $1 ORDER BY fingerprint", ts
    )
    return [_post(r) for r in rows]


async def get(conn: Conn, fingerprint: str) -> AlertPost | None:
    row = await conn.fetchrow("SELECT * FROM alert_posts WHERE fingerprint = $1", fingerprint)
    return None if row is None else _post(row)


async def open_posts(conn: Conn) -> list[AlertPost]:
    """Announced findings not seen resolved, oldest first."""
    rows = await conn.fetch(
        """SELECT * FROM alert_posts WHERE resolved_at IS NULL AND ts IS NOT NULL
           ORDER BY posted_at, fingerprint"""
    )
    return [_post(r) for r in rows]
