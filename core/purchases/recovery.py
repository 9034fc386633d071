"""The recovery sweep: find payments nobody verified, credit them once, expire the rest.

A user can pay and never call verify (closed tab, lost connection). For PENDING intents — the
least recently checked first, in a bounded batch — the sweep asks the chain for the
transactions that carry the intent's Solana Pay `reference` (`getSignaturesForAddress`),
and puts each successful one through the normal verify (`purchases.verify_for_recovery`):
the same rules, the same attempt records (source 'recovery'), the same exactly-once credit.

What becomes of an intent is `settle`'s decision, once the intent is past its deadline
(the pending SLA, and never before its expiry plus the grace period):

    no transaction carries its reference      -> EXPIRED (audited)
    a bound payment was refused (paid after the grace period, underpaid, wrong mint,
    already used, ...)                        -> REJECTED with that code: never credited,
                                                 left to reconciliation and a manual
                                                 adjustment
    a bound payment is not final yet          -> stays PENDING for the next sweep

An unreachable RPC node stops the sweep at once: the intents not yet looked up are left
exactly as they were (nothing expires on a lookup that did not happen). A closed verify gate
stops it too: the operators paused verification, so nothing is credited or expired.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from core import audit
from core.audit import Actor
from core.chain.rpc import RpcUnavailable
from core.errors import Conflict, InvalidInput, NotFound, Unprocessable, VerifyPaused
from core.purchases import store as intents_db
from core.purchases.credit import Credited
from core.purchases.intents import Intent, IntentStatus
from core.purchases.service import verify_for_recovery
from core.services import Services

log = logging.getLogger("payops.recovery")

RECOVERY_ACTOR = Actor("recovery", "scheduler")
SIGNATURES_PER_PAGE = 1000  # getSignaturesForAddress's largest page
_REFUSED = ("rejected", "conflict")


class ReferenceLookup(Protocol):
    """The one chain call the sweep needs (`SolanaRpc` has it)."""

    async def get_signatures_for_address(
        self,
        address: str,
        limit: int | None = None,
        before: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]: ...


class Settle(enum.StrEnum):
    """What the sweep does with an intent after looking at its payments."""

    KEEP = "keep"  # not past its deadline, or a payment is not final yet
    EXPIRE = "expire"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Looked:
    """What one sweep saw for one intent: how each bound transaction fared."""

    credited: bool = False
    pending: int = 0  # bound payments not decidable yet (not final)
    refused: tuple[str, ...] = ()  # codes of bound payments refused, oldest first
    closed: str | None = None  # the verify closed the intent (REJECTED) with this code


def deadline(intent: Intent, pending_sla: timedelta, grace: timedelta) -> datetime:
    """When an unpaid intent may be closed: after the SLA, never before expiry + grace."""
    return max(intent.created_at + pending_sla, intent.expires_at + grace)


def settle(looked: Looked, *, past_deadline: bool) -> Settle:
    """Pure: the fate of a still-PENDING intent after a lookup."""
    if looked.credited or not past_deadline or looked.pending:
        return Settle.KEEP
    return Settle.REJECT if looked.refused else Settle.EXPIRE


@dataclass
class SweepReport:
    """What a sweep did; `stopped` says why it ended early (nothing was left half-done)."""

    checked: int = 0
    credited: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    expired: list[uuid.UUID] = field(default_factory=list)
    rejected: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    refused: int = 0  # payments refused this sweep (attempts recorded)
    not_final: int = 0
    stopped: str | None = None

    def summary(self) -> str:
        text = (
            f"checked {self.checked}, credited {len(self.credited)}, "
            f"expired {len(self.expired)}, rejected {len(self.rejected)}, "
            f"refused payments {self.refused}, not final {self.not_final}"
        )
        return text + (f"; stopped early: {self.stopped}" if self.stopped else "")

    def facts(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "credited": [[str(i), s] for i, s in self.credited],
            "expired": [str(i) for i in self.expired],
            "rejected": [[str(i), c] for i, c in self.rejected],
            "refused": self.refused,
            "not_final": self.not_final,
            "stopped": self.stopped,
        }


async def sweep(
    svc: Services,
    chain: ReferenceLookup,
    *,
    now: datetime,
    batch: int | None = None,
    actor: Actor = RECOVERY_ACTOR,
    page: int = SIGNATURES_PER_PAGE,
) -> SweepReport:
    """Look up a batch of PENDING intents on chain; credit, expire or reject them (see module)."""
    s = svc.settings
    report = SweepReport()
    if not (await svc.gate.state()).verify.is_open:
        report.stopped = "verify gate closed: nothing credited or expired"
        return report
    intents = await due_intents(
        svc.pool,
        now=now,
        min_age=timedelta(seconds=s.recovery_min_age_seconds),
        limit=batch or s.recovery_batch_size,
    )
    sla = timedelta(seconds=s.pending_sla_seconds)
    for intent in intents:
        try:
            signatures = await _bound_signatures(chain, intent, page)
            looked = await _verify_each(svc, actor, intent, signatures, report)
        except RpcUnavailable as exc:
            report.stopped = f"rpc unavailable: {exc}"
            break
        except VerifyPaused:
            report.stopped = "verify gate closed during the sweep"
            break
        report.checked += 1
        fate = settle(looked, past_deadline=now >= deadline(intent, sla, svc.expiry_grace))
        outcome = "credited" if looked.credited else fate.value
        if looked.closed is not None:
            # The verify itself closed it (underpaid, paid after the grace period).
            outcome = "rejected"
            report.rejected.append((intent.id, looked.closed))
        elif fate is Settle.EXPIRE and await expire(svc.pool, actor, intent, now):
            report.expired.append(intent.id)
        elif fate is Settle.REJECT and await reject(svc.pool, actor, intent, looked.refused[0]):
            report.rejected.append((intent.id, looked.refused[0]))
        await _checked(svc.pool, intent.id, now, outcome)
        svc.metrics.recovery_outcomes.labels(outcome).inc()
    return report


async def _bound_signatures(chain: ReferenceLookup, intent: Intent, page_size: int) -> list[str]:
    """Successful transactions carrying the intent's reference, oldest first: every one, read
    back page by page (anyone can send transactions carrying a public reference, so a fixed
    window of the newest could hide the real payment behind dust).

    A failed transaction moved no tokens: it is no payment, so it is not verified (nor
    recorded as an attempt on every sweep)."""
    found: list[str] = []
    before: str | None = None
    while True:
        page = await chain.get_signatures_for_address(
            intent.reference, limit=page_size, before=before
        )
        found += [str(r["signature"]) for r in page if r.get("err") is None and r.get("signature")]
        if len(page) < page_size:
            return list(reversed(found))  # the node answers newest first
        before = str(page[-1]["signature"])


async def _verify_each(
    svc: Services, actor: Actor, intent: Intent, signatures: Sequence[str], report: SweepReport
) -> Looked:
    decided = await _decided_signatures(svc.pool, intent.id)
    credited, pending, refused = False, 0, []
    for signature in signatures:
        if signature in decided:
            # A final verdict on it is on record: the rules would say the same again.
            refused.append(decided[signature])
            continue
        current = await intents_db.get(svc.pool, intent.id)
        if current is None:
            raise NotFound("no such purchase intent", code="intent_not_found")
        try:
            result = await verify_for_recovery(svc, actor, current, signature)
        except (Conflict, Unprocessable, InvalidInput) as exc:
            # Recorded as an attempt by the verify; bound to this intent, so it is a finding
            # for reconciliation, never a silent credit.
            refused.append(exc.code)
            report.refused += 1
            log.warning(
                "recovery: payment %s for intent %s refused: %s",
                signature,
                intent.id,
                exc.code,
                extra={"intent_id": str(intent.id), "tx_signature": signature},
            )
            continue
        if isinstance(result, Credited):
            credited = True
            if not result.duplicate:
                report.credited.append((intent.id, signature))
                log.info(
                    "recovery: credited intent %s from an unverified payment",
                    intent.id,
                    extra={"intent_id": str(intent.id), "tx_signature": signature},
                )
        else:
            pending += 1
            report.not_final += 1
    closed = None
    if refused and not credited:
        after = await intents_db.get(svc.pool, intent.id)
        if after is not None and after.status is IntentStatus.REJECTED:
            closed = after.reject_code or refused[0]
    return Looked(credited=credited, pending=pending, refused=tuple(refused), closed=closed)


# --- SQL ----------------------------------------------------------------------------------


async def due_intents(
    pool: asyncpg.Pool, *, now: datetime, min_age: timedelta, limit: int
) -> list[Intent]:
    """PENDING intents older than `min_age`: never checked first, then least recently checked,
    then oldest."""
    rows = await pool.fetch(
        """SELECT i.* FROM purchase_intents i
             LEFT JOIN intent_recovery r ON r.intent_id = i.id
           WHERE i.status = 'PENDING' AND i.created_at <= $1
           ORDER BY r.last_checked_at NULLS FIRST, i.created_at
           LIMIT $2""",
        now - min_age,
        limit,
    )
    return [intents_db.intent_from_row(r) for r in rows]


async def _decided_signatures(pool: asyncpg.Pool, intent_id: uuid.UUID) -> dict[str, str]:
    """Signatures already refused for this intent (by anyone), with their codes."""
    rows = await pool.fetch(
        """SELECT DISTINCT ON (signature) signature, coalesce(code, outcome) AS code
           FROM verification_attempts
           WHERE intent_id = $1 AND outcome = ANY($2::text[])
           ORDER BY signature, id""",
        intent_id,
        list(_REFUSED),
    )
    return {r["signature"]: r["code"] for r in rows}


async def _checked(pool: asyncpg.Pool, intent_id: uuid.UUID, now: datetime, outcome: str) -> None:
    await pool.execute(
        """INSERT INTO intent_recovery (intent_id, checks, last_checked_at, last_outcome)
           VALUES ($1, 1, $2, $3)
           ON CONFLICT (intent_id) DO UPDATE SET checks = intent_recovery.checks + 1,
               last_checked_at = EXCLUDED.last_checked_at, last_outcome = EXCLUDED.last_outcome""",
        intent_id,
        now,
        outcome,
    )


async def expire(pool: asyncpg.Pool, actor: Actor, intent: Intent, now: datetime) -> bool:
    """PENDING -> EXPIRED with its audit record; False if the intent moved on meanwhile (a
    verify holding its row lock confirmed it: the UPDATE waits for it, then matches nothing)."""
    async with pool.acquire() as conn, conn.transaction():
        updated = await conn.fetchval(
            """UPDATE purchase_intents SET status = 'EXPIRED', updated_at = now()
               WHERE id = $1 AND status = 'PENDING' RETURNING id""",
            intent.id,
        )
        if updated is None:
            return False
        await audit.record(
            conn,
            actor,
            action="intent.expire",
            subject=f"intent:{intent.id}",
            before={"status": IntentStatus.PENDING.value},
            after={
                "status": IntentStatus.EXPIRED.value,
                "reason": "no payment carrying the reference found past the pending SLA",
                "created_at": intent.created_at.isoformat(),
                "expires_at": intent.expires_at.isoformat(),
                "swept_at": now.isoformat(),
            },
        )
    return True


async def reject(pool: asyncpg.Pool, actor: Actor, intent: Intent, code: str) -> bool:
    """PENDING -> REJECTED (a bound payment was refused), audited; False if it moved on."""
    async with pool.acquire() as conn, conn.transaction():
        updated = await conn.fetchval(
            """UPDATE purchase_intents SET status = 'REJECTED', reject_code = $2,
                   updated_at = now()
               WHERE id = $1 AND status = 'PENDING' RETURNING id""",
            intent.id,
            code,
        )
        if updated is None:
            return False
        await audit.record(
            conn,
            actor,
            action="intent.reject",
            subject=f"intent:{intent.id}",
            before={"status": IntentStatus.PENDING.value},
            after={
                "status": IntentStatus.REJECTED.value,
                "code": code,
                "reason": "a payment bound to the intent was refused; past the pending SLA",
            },
        )
    return True
