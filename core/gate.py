"""The verify gate: two switches kept in the database.

    verify          closed: the server stops processing verifies (503 verify_paused with
                    Retry-After); intents stay PENDING and nothing is lost.
    client_retries  closed: the frontend is told (GET /v1/status) to stop retrying.

Every replica reads the switches through a `GateReader`, whose cache lives at most
`ttl` seconds (half a second by default), so a change reaches every replica within a second.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core import audit
from core.audit import Actor
from core.errors import Conflict, InvalidInput


class SwitchName(enum.StrEnum):
    VERIFY = "verify"
    CLIENT_RETRIES = "client_retries"


@dataclass(frozen=True, slots=True)
class Switch:
    name: SwitchName
    is_open: bool
    reason: str
    changed_by: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class GateState:
    verify: Switch
    client_retries: Switch


async def read(conn: asyncpg.Connection | asyncpg.Pool) -> GateState:
    rows = await conn.fetch(
        "SELECT name, is_open, reason, changed_by, changed_at FROM gate_switches"
    )
    switches = {
        r["name"]: Switch(
            SwitchName(r["name"]), r["is_open"], r["reason"], r["changed_by"], r["changed_at"]
        )
        for r in rows
    }
    missing = {n.value for n in SwitchName} - switches.keys()
    if missing:
        raise LookupError(f"gate switches {sorted(missing)} are missing: run `payops migrate`")
    return GateState(verify=switches["verify"], client_retries=switches["client_retries"])


async def set_switch(
    conn: asyncpg.Connection, name: SwitchName, *, is_open: bool, reason: str, actor: Actor
) -> Switch:
    """Open or close one switch, with its audit record, in one transaction."""
    reason = reason.strip()
    if not is_open and not reason:
        raise InvalidInput("closing a gate switch needs a reason", code="reason_required")
    async with conn.transaction():
        before = await conn.fetchrow(
            "SELECT is_open, reason, changed_by FROM gate_switches WHERE name = $1 FOR UPDATE",
            name.value,
        )
        row = await conn.fetchrow(
            """UPDATE gate_switches
               SET is_open = $2, reason = $3, changed_by = $4, changed_at = now()
               WHERE name = $1 RETURNING name, is_open, reason, changed_by, changed_at""",
            name.value,
            is_open,
            reason,
            actor.id,
        )
        if row is None:
            raise LookupError(f"gate switch {name} is missing: run `payops migrate`")
        await audit.record(
            conn,
            actor,
            action=f"gate.{name.value}.{'open' if is_open else 'close'}",
            subject=f"gate:{name.value}",
            before=None if before is None else dict(before.items()),
            after={"is_open": is_open, "reason": reason, "changed_by": actor.id},
        )
    return Switch(
        SwitchName(row["name"]), row["is_open"], row["reason"], row["changed_by"], row["changed_at"]
    )


def check_reopen(
    switch: Switch,
    last_passed_smoke: datetime | None,
    *,
    force_reason: str | None,
    drift: str | None = None,
) -> None:
    """Refuse to reopen a closed switch without a smoke test that passed after the close, or
    while the latest reconciliation shows drift (`drift` describes it; None when zero).

    The runbook: "Re-enable normal traffic only after smoke test passes" and "Reconcile and
    verify before re-opening payment flow". `--force` with a reason overrides both (and the
    reason is audited).
    """
    if switch.is_open or force_reason:
        return
    if drift is not None:
        raise Conflict(
            f"the latest reconciliation shows drift ({drift}): repair it and reconcile to zero "
            "drift first, or open --force <reason>",
            code="drift_nonzero",
        )
    if last_passed_smoke is None or last_passed_smoke <= switch.changed_at:
        raise Conflict(
            f"{switch.name} was closed at {switch.changed_at:%Y-%m-%d %H:%M:%S} UTC and no smoke "
            "test has passed since: run the smoke test first, or open --force <reason>",
            code="smoke_required",
        )


class GateReader:
    """A per-process view of the gate, re-read from the database at most every `ttl` s."""

    def __init__(self, pool: asyncpg.Pool, *, ttl: float = 0.5) -> None:
        self._pool = pool
        self._ttl = ttl
        self._state: GateState | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def state(self) -> GateState:
        if self._state is not None and time.monotonic() - self._read_at < self._ttl:
            return self._state
        async with self._lock:
            if self._state is None or time.monotonic() - self._read_at >= self._ttl:
                self._state = await read(self._pool)
                self._read_at = time.monotonic()
            return self._state

    def invalidate(self) -> None:
        self._state = None
