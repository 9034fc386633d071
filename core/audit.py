"""The audit log: who changed what, from where, before and after — hash-chained.

Every state change writes its audit record in the same database transaction as the change.
Each row is hashed on insert (a trigger); `seal()` chains committed rows in order
(`chain_hash = sha256(previous chain_hash || row_hash)`), which `verify_chain()` recomputes,
so an edited, deleted or reordered row is evident. Sealing is separate from inserting so
concurrent writers never queue behind one "last hash" row lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user id, a Slack user, a service, or a job; and through which door."""

    id: str
    source: str  # api | slack | cli | scheduler | system
    request_id: str | None = None


# The actor id of someone who acted without a proven identity (`payops ops --break-glass`):
# `unverified:<the id they claimed>`. Such an actor never counts as an approval.
UNVERIFIED_PREFIX = "unverified:"


def unverified(claimed: str) -> str:
    """The actor id recorded for a claimed, unproven identity."""
    return UNVERIFIED_PREFIX + claimed


def is_unverified(actor_id: str) -> bool:
    return actor_id.startswith(UNVERIFIED_PREFIX)


async def record(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    action: str,
    subject: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Append one audit record on `conn` (inside the caller's transaction)."""
    await conn.execute(
        """INSERT INTO audit_log (actor, source, action, subject, before, after, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        actor.id,
        actor.source,
        action,
        subject,
        before,
        after,
        actor.request_id,
    )


async def seal(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Chain every committed unsealed row; returns how many were sealed."""
    return int(await conn.fetchval("SELECT audit_seal()"))


@dataclass(frozen=True, slots=True)
class ChainReport:
    rows: int
    sealed: int
    problems: list[str]
    unsealed: int = 0  # committed after the last seal: chained by the next one

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_chain(conn: asyncpg.Connection, *, batch: int = 5000) -> ChainReport:
    """Recompute every row hash (in the database) and the chain (here), in seq order.

    Reads one snapshot, so that `rows` = `sealed` + `unsealed` even while others write: a
    row committed after the last seal is unsealed (not a problem: the next seal chains it)."""
    if conn.is_in_transaction():
        return await _verify_chain(conn, batch)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _verify_chain(conn, batch)


async def _verify_chain(conn: asyncpg.Connection, batch: int) -> ChainReport:
    problems: list[str] = []
    bad_rows = await conn.fetch(
        "SELECT id FROM audit_log a WHERE row_hash <> payops_audit_row_hash(a) ORDER BY id LIMIT 20"
    )
    problems += [f"audit row {r['id']} was modified after it was written" for r in bad_rows]
    total, unsealed = await conn.fetchrow(
        "SELECT count(*), count(*) FILTER (WHERE seq IS NULL) FROM audit_log"
    )
    prev = b""
    expected_seq = 1
    sealed = 0
    last_seq = 0
    while True:
        rows = await conn.fetch(
            """SELECT id, seq, row_hash, chain_hash FROM audit_log
               WHERE seq > $1 ORDER BY seq LIMIT $2""",
            last_seq,
            batch,
        )
        if not rows:
            break
        for r in rows:
            if r["seq"] != expected_seq:
                problems.append(f"audit chain has a gap before seq {r['seq']} (row {r['id']})")
                expected_seq = r["seq"]
            prev = hashlib.sha256(prev + bytes(r["row_hash"])).digest()
            if prev != bytes(r["chain_hash"]):
                problems.append(f"audit chain breaks at seq {r['seq']} (row {r['id']})")
                prev = bytes(r["chain_hash"])
            expected_seq += 1
            sealed += 1
        last_seq = rows[-1]["seq"]
    return ChainReport(
        rows=int(total), sealed=sealed, problems=problems[:50], unsealed=int(unsealed)
    )


def canonical_json(value: Any) -> str:
    """Stable JSON text for hashing request bodies."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
