"""Reconciliation tickets: the runbook's "Open reconciliation ticket with user ids + tx
signatures + intent ids", then "Apply manual corrections", then "Re-run checks".

A ticket (`RECON-<n>`) is opened from one or more open findings, each at most on one open
ticket; it lists their user ids, signatures and intent ids. Adjustments join it through their
free-text `ticket` reference (`/pay-adjust ... ticket:RECON-<n>`). It closes only when a
reconciliation run has found every one of its findings resolved — the database refuses the
rest too (migration 0004). Opening and closing are audited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core import audit
from core.audit import Actor
from core.errors import Conflict, InvalidInput, NotFound
from core.recon.findings import FindingKind, Severity

MIN_PREFIX = 8  # characters of a fingerprint that identify it
MAX_FINDINGS = 50
_REF = re.compile(r"^(?:RECON-)?(\d{1,12})$", re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True, slots=True)
class TicketFinding:
    id: int
    fingerprint: str
    kind: FindingKind
    severity: Severity
    status: str  # open | resolved
    detail: str
    resolved_run: int | None


@dataclass(frozen=True, slots=True)
class TicketAdjustment:
    id: int
    user_id: str
    credits: int
    kind: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    status: str  # open | closed
    note: str
    user_ids: tuple[str, ...]
    signatures: tuple[str, ...]
    intent_ids: tuple[str, ...]
    opened_by: str
    opened_at: datetime
    closed_by: str | None
    closed_at: datetime | None
    closed_run: int | None
    findings: tuple[TicketFinding, ...]
    adjustments: tuple[TicketAdjustment, ...]

    @property
    def ref(self) -> str:
        return ticket_ref(self.id)

    @property
    def open_findings(self) -> list[TicketFinding]:
        return [f for f in self.findings if f.status == "open"]


def ticket_ref(ticket_id: int) -> str:
    return f"RECON-{ticket_id}"


def parse_ticket_ref(text: str) -> int:
    """`RECON-12` (or `12`) -> 12, else `InvalidInput`."""
    match = _REF.match(text.strip())
    if not match:
        raise InvalidInput(f"{text!r} is not a ticket: use RECON-<number>", code="invalid_ticket")
    return int(match[1])


def parse_fingerprints(tokens: Sequence[str]) -> list[str]:
    """Distinct lower-case fingerprint prefixes of at least `MIN_PREFIX` hex characters."""
    prefixes = list(dict.fromkeys(t.strip().lower() for t in tokens if t.strip()))
    if not prefixes:
        raise InvalidInput("name at least one finding fingerprint", code="invalid_fingerprint")
    if len(prefixes) > MAX_FINDINGS:
        raise InvalidInput(
            f"at most {MAX_FINDINGS} findings per ticket", code="invalid_fingerprint"
        )
    for p in prefixes:
        if len(p) < MIN_PREFIX or len(p) > 64 or not _HEX.match(p):
            raise InvalidInput(
                f"{p!r} is not a fingerprint: give at least {MIN_PREFIX} of its hex characters",
                code="invalid_fingerprint",
            )
    return prefixes


async def open_ticket(
    conn: asyncpg.Connection,
    actor: Actor,
    fingerprints: Sequence[str],
    *,
    now: datetime,
    note: str = "",
) -> Ticket:
    """Open a ticket for open findings named by fingerprint (or a unique prefix of one).

    Raises NotFound (no open finding), InvalidInput (ambiguous prefix) and Conflict
    (a finding already on an open ticket). One transaction from the prefix lookup to the
    audit record, kept in one function so its locking order reads in one place.
    """
    prefixes = parse_fingerprints(fingerprints)
    if len(note) > 500:
        raise InvalidInput("the note is at most 500 characters", code="invalid_note")
    async with conn.transaction():
        rows = []
        for prefix in prefixes:
            matches = await conn.fetch(
                """SELECT id, fingerprint, user_ids, signatures, intent_ids FROM recon_findings
                   WHERE status = 'open' AND fingerprint LIKE $1 || '%'
                   ORDER BY id LIMIT 2 FOR UPDATE""",
                prefix,
            )
            if not matches:
                raise NotFound(f"no open finding {prefix}", code="finding_not_found")
            if len(matches) > 1:
                raise InvalidInput(
                    f"{prefix} names more than one open finding: give more characters",
                    code="ambiguous_fingerprint",
                )
            rows.append(matches[0])
        ids = sorted({int(r["id"]) for r in rows})
        taken = await conn.fetch(
            """SELECT tf.finding_id, tf.ticket_id FROM recon_ticket_findings tf
               JOIN recon_tickets t ON t.id = tf.ticket_id
               WHERE t.status = 'open' AND tf.finding_id = ANY ($1::bigint[])""",
            ids,
        )
        if taken:
            on = ", ".join(sorted({ticket_ref(r["ticket_id"]) for r in taken}))
            raise Conflict(
                f"{len(taken)} of these findings are already on open ticket {on}",
                code="finding_already_ticketed",
            )
        users = sorted({u for r in rows for u in r["user_ids"]})
        sigs = sorted({s for r in rows for s in r["signatures"]})
        intents = sorted({i for r in rows for i in r["intent_ids"]})
        ticket_id = int(
            await conn.fetchval(
                """INSERT INTO recon_tickets (note, user_ids, signatures, intent_ids,
                       opened_by, opened_at)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
                note.strip(),
                users,
                sigs,
                intents,
                actor.id,
                now,
            )
        )
        await conn.execute(
            """INSERT INTO recon_ticket_findings (ticket_id, finding_id)
               SELECT $1, unnest($2::bigint[])""",
            ticket_id,
            ids,
        )
        await audit.record(
            conn,
            actor,
            action="recon.ticket.open",
            subject=f"recon_ticket:{ticket_ref(ticket_id)}",
            after={
                "findings": sorted(r["fingerprint"] for r in rows),
                "user_ids": users,
                "signatures": sigs,
                "intent_ids": intents,
                "note": note.strip(),
            },
        )
        return await _load(conn, ticket_id)


async def get_ticket(conn: asyncpg.Connection | asyncpg.Pool, ref: str | int) -> Ticket:
    """The ticket with its findings and adjustments, or NotFound."""
    ticket_id = ref if isinstance(ref, int) else parse_ticket_ref(ref)
    return await _load(conn, ticket_id)


async def list_open(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 20) -> list[Ticket]:
    """Open tickets, oldest first."""
    ids = await conn.fetch(
        "SELECT id FROM recon_tickets WHERE status = 'open' ORDER BY id LIMIT $1", limit
    )
    return [await _load(conn, int(r["id"])) for r in ids]


async def close_ticket(
    conn: asyncpg.Connection, actor: Actor, ref: str | int, *, now: datetime
) -> Ticket:
    """Close a ticket whose findings a reconciliation run found resolved, or Conflict."""
    ticket_id = ref if isinstance(ref, int) else parse_ticket_ref(ref)
    async with conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM recon_tickets WHERE id = $1 FOR UPDATE", ticket_id
        )
        if status is None:
            raise NotFound(f"no ticket {ticket_ref(ticket_id)}", code="ticket_not_found")
        ticket = await _load(conn, ticket_id)
        if status == "closed":
            raise Conflict(f"{ticket.ref} is already closed", code="ticket_closed")
        still = ticket.open_findings
        if still:
            listed = "; ".join(f"{f.fingerprint[:12]} {f.kind}" for f in still[:10])
            raise Conflict(
                f"{ticket.ref} cannot close: {len(still)} of its findings are still open "
                f"({listed}). Apply the corrections, re-run `/pay-recon`, then close.",
                code="ticket_findings_open",
            )
        run_id = await conn.fetchval("SELECT max(id) FROM recon_runs")
        await conn.execute(
            """UPDATE recon_tickets SET status = 'closed', closed_by = $2, closed_at = $3,
                   closed_run = $4 WHERE id = $1""",
            ticket_id,
            actor.id,
            now,
            run_id,
        )
        await audit.record(
            conn,
            actor,
            action="recon.ticket.close",
            subject=f"recon_ticket:{ticket.ref}",
            before={"status": "open"},
            after={
                "status": "closed",
                "closed_run": run_id,
                "findings": [f.fingerprint for f in ticket.findings],
                "resolved_runs": sorted(
                    {f.resolved_run for f in ticket.findings if f.resolved_run}
                ),
                "adjustments": [a.id for a in ticket.adjustments],
            },
        )
        return await _load(conn, ticket_id)


async def _load(conn: asyncpg.Connection | asyncpg.Pool, ticket_id: int) -> Ticket:
    row = await conn.fetchrow("SELECT * FROM recon_tickets WHERE id = $1", ticket_id)
    if row is None:
        raise NotFound(f"no ticket {ticket_ref(ticket_id)}", code="ticket_not_found")
    findings = await conn.fetch(
        """SELECT f.id, f.fingerprint, f.kind, f.severity, f.status, f.detail, f.resolved_run
           FROM recon_ticket_findings tf JOIN recon_findings f ON f.id = tf.finding_id
           WHERE tf.ticket_id = $1 ORDER BY f.id""",
        ticket_id,
    )
    # an adjustment names its ticket in free text: equal, or one of a comma-separated list
    adjustments = await conn.fetch(
        """SELECT id, user_id, credits, kind, status, reason FROM adjustments
           WHERE upper(ticket) = $1
              OR $1 = ANY (string_to_array(upper(replace(ticket, ' ', '')), ','))
           ORDER BY id""",
        ticket_ref(ticket_id),
    )
    return _ticket(row, findings, adjustments)


def _ticket(row: Any, findings: Sequence[Any], adjustments: Sequence[Any]) -> Ticket:
    return Ticket(
        id=row["id"],
        status=row["status"],
        note=row["note"],
        user_ids=tuple(row["user_ids"]),
        signatures=tuple(row["signatures"]),
        intent_ids=tuple(row["intent_ids"]),
        opened_by=row["opened_by"],
        opened_at=row["opened_at"],
        closed_by=row["closed_by"],
        closed_at=row["closed_at"],
        closed_run=row["closed_run"],
        findings=tuple(
            TicketFinding(
                f["id"],
                f["fingerprint"],
                FindingKind(f["kind"]),
                Severity(f["severity"]),
                f["status"],
                f["detail"],
                f["resolved_run"],
            )
            for f in findings
        ),
        adjustments=tuple(
            TicketAdjustment(
                a["id"], a["user_id"], int(a["credits"]), a["kind"], a["status"], a["reason"]
            )
            for a in adjustments
        ),
    )
