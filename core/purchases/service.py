"""The purchase use cases: create an intent, read it, verify it and credit exactly once.

Verify reads the chain *outside* any database transaction, then credits in one
transaction (`core/purchases/credit.py`: BEGIN, one call of `payops_credit_purchase`,
COMMIT) that locks the intent row, re-checks its status, inserts the ledger transaction
(unique per signature and per intent), moves the balance, marks the intent CONFIRMED and
writes the verification attempt and the audit record. If the connection dies in between,
nothing is half-written and a retry credits once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import asyncpg

from core import audit
from core.audit import Actor
from core.chain.signatures import parse_signature
from core.chain.verdict import Confirmed, Pending, PendingReason, Rejected, Verdict
from core.errors import Conflict, NotFound, Unprocessable, VerifyPaused
from core.purchases import store as intents_db
from core.purchases.credit import (
    Credited,
    already_credited,
    attempt_source,
    credit,
    record_attempt,
)
from core.purchases.intents import (
    Intent,
    IntentStatus,
    Precheck,
    expectation,
    new_intent,
    precheck,
    rejection_closes_intent,
)
from core.services import Services

VERIFY_RETRY_AFTER_SECONDS = 5


async def create_intent(
    svc: Services, conn: asyncpg.Connection, actor: Actor, *, credits: int, wallet: str | None
) -> Intent:
    """Create and store a PENDING intent for the actor (a user), with its audit record."""
    intent = new_intent(
        user_id=actor.id, credits=credits, wallet=wallet, payment=svc.payment, now=svc.clock()
    )
    async with conn.transaction():
        await intents_db.insert(conn, intent)
        await audit.record(
            conn,
            actor,
            action="intent.create",
            subject=f"intent:{intent.id}",
            after={"credits": intent.credits, "amount": str(intent.amount), "status": "PENDING"},
        )
    svc.metrics.intents_created.inc()
    svc.fresh.remember(intent)
    return intent


async def get_intent(svc: Services, user_id: str, intent_id: uuid.UUID) -> Intent:
    """The intent, only for its owner: anyone else gets the same 404 as an unknown id."""
    intent = await intents_db.get(svc.pool, intent_id)
    if intent is None or intent.user_id != user_id:
        raise NotFound("no such purchase intent", code="intent_not_found")
    return intent


@dataclass(frozen=True, slots=True)
class StillPending:
    intent: Intent
    reason: PendingReason
    detail: str
    retry_after: int


VerifyResult = Credited | StillPending


async def verify_intent(
    svc: Services, actor: Actor, intent_id: uuid.UUID, raw_signature: object
) -> VerifyResult:
    """Verify an intent with the signature of its payment; credit exactly once.

    Raises InvalidInput (bad signature), NotFound, Conflict (signature used elsewhere or
    intent settled otherwise), Unprocessable (payment rejected: `code` says why) and
    VerifyPaused (gate closed: nothing is written).

    A settled pair is answered without the chain; an intent this process created (fresh)
    asks the chain before it is read, and is read only when its payment is not credited
    straight away (`settled.py`).
    """
    signature = parse_signature(raw_signature)
    settled = svc.settled.get(intent_id, signature)
    if settled is not None:  # credited by this signature, as the database confirmed
        if settled.user_id != actor.id:
            raise NotFound("no such purchase intent", code="intent_not_found")
        await require_gate_open(svc)
        return await already_credited(svc, actor, settled, signature)
    verdict = None
    fresh = svc.fresh.get(intent_id)
    if fresh is not None and fresh.user_id == actor.id:
        await require_gate_open(svc)
        verdict = await svc.verifier.verify(signature, expectation(fresh), svc.clock())
        if isinstance(verdict, Confirmed):
            credited = await _credit_fresh(svc, actor, fresh, signature, verdict)
            if credited is not None:
                return credited
    intent, owner = await intents_db.get_for_verify(svc.pool, intent_id, signature)
    if intent is None or intent.user_id != actor.id:
        raise NotFound("no such purchase intent", code="intent_not_found")
    if verdict is None:  # else the gate was open when the chain was asked
        await require_gate_open(svc)
    return await verify_checked(svc, actor, intent, signature, owner, verdict=verdict)


# What the credit's re-check of the locked row refuses with (`precheck`): the intent was
# settled otherwise since this process created it.
_SETTLED_OTHERWISE = frozenset({"intent_already_confirmed", "intent_rejected"})


async def _credit_fresh(
    svc: Services, actor: Actor, fresh: Intent, signature: str, verdict: Confirmed
) -> Credited | None:
    """The credit of a fresh intent's confirmed payment (`settled.py`), or None when the
    locked row was settled otherwise: the verify then reads it and answers as it would have
    before the chain (nothing was written)."""
    try:
        return await credit(svc, actor, fresh, signature, verdict)
    except Conflict as exc:
        if exc.code not in _SETTLED_OTHERWISE:
            raise
        svc.fresh.forget(fresh.id)
        return None


async def verify_for_recovery(
    svc: Services, actor: Actor, intent: Intent, signature: str
) -> VerifyResult:
    """The system-side verify (the recovery sweep): `verify_intent` without the owner check.

    The same rules, the same attempt records (source 'recovery' for a scheduler actor) and
    the same exactly-once `credit_in`; raises what `verify_intent` raises (Conflict,
    Unprocessable, VerifyPaused when the operators closed the gate)."""
    signature = parse_signature(signature)
    await require_gate_open(svc)
    owner = await intents_db.intent_of_signature(svc.pool, signature)
    return await verify_checked(svc, actor, intent, signature, owner)


async def verify_detected(
    svc: Services, actor: Actor, intent_id: uuid.UUID, signature: str, *, paid_before: int = 0
) -> VerifyResult:
    """The treasury watcher's verify of a payment it found bound to `intent_id`: the same
    rules and exactly-once credit as `verify_intent`, without the owner check (attempts
    recorded with source 'watcher'). Raises what `verify_intent` raises.

    `paid_before`: what earlier payments bound to the intent brought to the treasury, each
    valid but short (`partial_payment`). This payment completes the price when it brings
    the rest: the rules then judge it against what is still owed, and the credit records
    the total received."""
    if paid_before < 0:
        raise ValueError("paid_before must not be negative")
    signature = parse_signature(signature)
    intent, owner = await intents_db.get_for_verify(svc.pool, intent_id, signature)
    if intent is None:
        raise NotFound("no such purchase intent", code="intent_not_found")
    await require_gate_open(svc)
    return await verify_checked(svc, actor, intent, signature, owner, paid_before=paid_before)


async def partial_payment(svc: Services, intent_id: uuid.UUID, signature: str) -> int | None:
    """What `signature` paid towards the intent when every rule but the amount holds (bound,
    right mint and treasury, in time, not failed), else None. Reads the chain only."""
    intent = await intents_db.get(svc.pool, intent_id)
    if intent is None:
        return None
    anything = replace(expectation(intent), amount=1)
    verdict = await svc.verifier.verify(parse_signature(signature), anything, svc.clock())
    return verdict.received if isinstance(verdict, Confirmed) else None


async def require_gate_open(svc: Services) -> None:
    if not (await svc.gate.state()).verify.is_open:
        svc.metrics.verify_outcomes.labels("paused", "verify_paused").inc()
        raise VerifyPaused(
            "payment verification is paused by the operators; your intent stays pending",
            retry_after=VERIFY_RETRY_AFTER_SECONDS,
        )


async def verify_checked(
    svc: Services,
    actor: Actor,
    intent: Intent,
    signature: str,
    owner: uuid.UUID | None,
    *,
    paid_before: int = 0,
    verdict: Verdict | None = None,
) -> VerifyResult:
    """`owner`: the intent `signature` already credited, if any, as read before the chain.
    `verdict`: the chain's, when the caller asked it already (with the same terms)."""
    try:
        if precheck(intent, signature) is Precheck.ALREADY_CREDITED:
            return await already_credited(svc, actor, intent, signature)
        if owner is not None and owner != intent.id:
            raise Conflict(
                "this transaction already paid for another intent", code="signature_already_used"
            )
    except Conflict as exc:
        await record_attempt(svc, actor, intent, signature, "conflict", exc.code, exc.message)
        raise

    if verdict is None:
        expected = expectation(intent)
        if paid_before:
            expected = replace(expected, amount=max(1, intent.amount - paid_before))
        verdict = await svc.verifier.verify(signature, expected, svc.clock())
    if paid_before and isinstance(verdict, Confirmed):
        total = verdict.received + paid_before
        verdict = replace(verdict, received=total, overpaid=total > intent.amount)

    if isinstance(verdict, Pending):
        await record_attempt(
            svc, actor, intent, signature, "pending", verdict.reason.value, verdict.detail
        )
        return StillPending(intent, verdict.reason, verdict.detail, VERIFY_RETRY_AFTER_SECONDS)
    if isinstance(verdict, Rejected):
        await _reject(svc, actor, intent, signature, verdict)
        raise Unprocessable(verdict.message, code=verdict.code.value)
    return await credit(svc, actor, intent, signature, verdict)


async def _reject(
    svc: Services, actor: Actor, intent: Intent, signature: str, verdict: Rejected
) -> None:
    svc.metrics.verify_outcomes.labels("rejected", verdict.code.value).inc()
    if rejection_closes_intent(verdict.code):
        svc.fresh.forget(intent.id)
    async with svc.pool.acquire() as conn, conn.transaction():
        await intents_db.record_attempt(
            conn,
            intent=intent,
            signature=signature,
            source=attempt_source(actor),
            outcome="rejected",
            code=verdict.code.value,
            detail=verdict.message[:500],
            request_id=actor.request_id,
        )
        if rejection_closes_intent(verdict.code) and intent.status is not IntentStatus.CONFIRMED:
            before = await intents_db.mark_rejected(conn, intent, code=verdict.code.value)
            if before is None:
                return  # confirmed or rejected meanwhile: no state change, no audit record
            await audit.record(
                conn,
                actor,
                action="intent.reject",
                subject=f"intent:{intent.id}",
                before={"status": before},
                after={"status": "REJECTED", "code": verdict.code.value, "tx_signature": signature},
            )
