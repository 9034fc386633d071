"""The credit: exactly once, and the verification attempt each verify leaves.

`credit` runs `credit_in` in a transaction of its own (BEGIN, one call of
`payops_credit_purchase`, COMMIT: migration 0013), or, under load, with the other credits in
flight in one transaction (`grouped.py`), and turns the database's answer into the verify's:
the pair is then settled for good (`Services.settled`). A repeat of a credited
pair records its attempt with other duplicates' (`core/purchases/duplicates.py`), and
verifies of one pair in flight together send one credit (`credit`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from core import db
from core.audit import Actor
from core.chain.verdict import Confirmed
from core.errors import Conflict, NotFound
from core.ledger import purchase_postings
from core.purchases import store as intents_db
from core.purchases.intents import Intent, IntentStatus, precheck
from core.services import Services

log = logging.getLogger("payops.purchases")

CREDIT_FAILURE_RECORD_SECONDS = 2.0  # a failed credit's attempt record waits no longer


@dataclass(frozen=True, slots=True)
class Credited:
    intent: Intent
    credited: int
    balance: int
    duplicate: bool  # this call found the intent already credited by the same signature


async def credit_in(
    conn: asyncpg.Connection | asyncpg.Pool,
    actor: Actor,
    intent: Intent,
    signature: str,
    verdict: Confirmed,
) -> tuple[Intent, int, bool]:
    """The credit, in one round trip (`store.credit`), inside the caller's transaction (on a
    pool it would commit on its own, even for a caller that died meanwhile: `credit` sends
    it between BEGIN and COMMIT).

    Locks the intent row and re-checks it, posts the purchase (unique per signature and per
    intent), marks the intent CONFIRMED, records the attempt and the audit record; a repeat
    of the signature that confirmed it records a duplicate attempt only. `intent` is the
    intent read before the chain (its user and credits never change). Returns (the intent
    after the credit, balance after, duplicate). Raises NotFound, Conflict (the locked intent
    was settled otherwise: nothing written) and asyncpg.UniqueViolationError when another
    intent already holds the signature."""
    call = credit_call(actor, intent, signature, verdict)
    return _outcome(call, await intents_db.credit(conn, call))


def credit_call(
    actor: Actor, intent: Intent, signature: str, verdict: Confirmed
) -> intents_db.CreditCall:
    """What `payops_credit_purchase` is given for this credit."""
    flags = ",".join(f for f, on in (("overpaid", verdict.overpaid), ("late", verdict.late)) if on)
    return intents_db.CreditCall(
        intent=intent,
        received=verdict.received,
        postings=purchase_postings(intent.user_id, intent.credits),
        description=f"purchase of {intent.credits} credits, intent {intent.id}",
        attempt=intents_db.Attempt(
            signature=signature,
            source=attempt_source(actor),
            outcome="confirmed",  # or 'duplicate': the locked row decides
            code=flags or None,
            detail=f"received {verdict.received} at slot {verdict.slot}",
            request_id=actor.request_id,
        ),
        actor=actor,
        facts=_confirmed_facts(intent, signature, verdict),
    )


def _outcome(call: intents_db.CreditCall, done: intents_db.CreditRow) -> tuple[Intent, int, bool]:
    if done.intent is None:
        raise NotFound("no such purchase intent", code="intent_not_found")
    if done.outcome == "refused":
        precheck(done.intent, call.attempt.signature)  # raises the Conflict that says why
        raise RuntimeError(f"credit refused an intent in status {done.intent.status.value}")
    return done.intent, done.balance, done.outcome == "duplicate"


async def credit(
    svc: Services, actor: Actor, intent: Intent, signature: str, verdict: Confirmed
) -> Credited:
    """The credit of `intent` paid by `signature` (confirmed by `verdict`), exactly once.

    A pair this process has settled is answered as a duplicate without a transaction; a pair
    whose credit is in flight here waits for that one and is then answered as a duplicate,
    or, when it failed, sends its own credit (`settled.py`, *Pairs being credited*)."""
    in_flight = svc.settled.crediting(intent.id, signature)
    if in_flight is not None:
        await in_flight.wait()
    settled = svc.settled.get(intent.id, signature)
    if settled is not None:
        return await already_credited(svc, actor, settled, signature)
    if in_flight is not None:  # the first one failed: this one goes on its own, as before
        return await _credit(svc, actor, intent, signature, verdict)
    with svc.settled.credit_in_flight(intent.id, signature):
        return await _credit(svc, actor, intent, signature, verdict)


async def _credit(
    svc: Services, actor: Actor, intent: Intent, signature: str, verdict: Confirmed
) -> Credited:
    try:
        confirmed, balance, duplicate = await _credit_transaction(
            svc, actor, intent, signature, verdict
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name not in CREDIT_UNIQUE_CONSTRAINTS:
            await _record_credit_failure(svc, actor, intent, signature, verdict, exc)
            raise
        # Another intent's credit won the race for this signature between our check and
        # our insert; the constraint, not the check, is what guarantees exactly once.
        conflict = Conflict(
            "this transaction already paid for another intent", code="signature_already_used"
        )
        await record_attempt(
            svc, actor, intent, signature, "conflict", conflict.code, str(exc.constraint_name)
        )
        raise conflict from exc
    except db.DATABASE_ERRORS as exc:
        await _record_credit_failure(svc, actor, intent, signature, verdict, exc)
        raise
    svc.settled.remember(confirmed)  # committed: the pair is settled for good
    svc.fresh.forget(confirmed.id)
    outcome = "duplicate" if duplicate else "confirmed"
    svc.metrics.verify_outcomes.labels(outcome, "ok").inc()
    if not duplicate:
        svc.metrics.credits_applied.labels("purchase").inc(intent.credits)
    return Credited(confirmed, confirmed.credits, balance, duplicate)


# The constraints that make a purchase credit unique per signature and per intent.
CREDIT_UNIQUE_CONSTRAINTS = frozenset(
    {"ledger_transactions_purchase_signature_key", "ledger_transactions_intent_id_key"}
)


async def _credit_transaction(
    svc: Services, actor: Actor, intent: Intent, signature: str, verdict: Confirmed
) -> tuple[Intent, int, bool]:
    """The credit with the others in flight (`grouped.py`), or `credit_in` in a transaction
    of its own (BEGIN, the one call, COMMIT: a process that dies before COMMIT leaves
    nothing, as the server rolls back a transaction whose client is gone, even one that had
    to wait for a lock). A unique violation on anything but the
    credit's own constraints (two first postings of one new user creating
    its account or balance row at the same instant) is a race the retry no longer meets:
    the row exists then. The credit's own constraints are never retried: they are the
    exactly-once."""
    call = credit_call(actor, intent, signature, verdict)
    grouped = await svc.credits.credit(svc.pool, call)
    if grouped is not None:  # committed with other credits in flight (`grouped.py`)
        return _outcome(call, grouped)
    with svc.credits.alone():
        try:
            async with svc.pool.acquire() as conn, conn.transaction():
                return _outcome(call, await intents_db.credit(conn, call))
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name in CREDIT_UNIQUE_CONSTRAINTS:
                raise
            log.info(
                "credit raced on %s; retrying once",
                exc.constraint_name,
                extra={"intent_id": str(intent.id), "tx_signature": signature},
            )
        async with svc.pool.acquire() as conn, conn.transaction():
            return _outcome(call, await intents_db.credit(conn, call))


async def _record_credit_failure(
    svc: Services,
    actor: Actor,
    intent: Intent,
    signature: str,
    verdict: Confirmed,
    exc: BaseException,
) -> None:
    """Best effort, on a fresh connection: the payment was valid and nothing was credited
    (the transaction rolled back). When the database is still unreachable this gives up
    quickly and only logs; triage then infers the failure from the chain instead."""
    detail = f"received {verdict.received} at slot {verdict.slot}; {type(exc).__name__}: {exc}"
    try:
        async with asyncio.timeout(CREDIT_FAILURE_RECORD_SECONDS):
            await record_attempt(
                svc, actor, intent, signature, "credit_failed", "ledger_write_failed", detail
            )
    except db.DATABASE_ERRORS as again:
        log.warning(
            "credit failed and could not be recorded",
            extra={"intent_id": str(intent.id), "tx_signature": signature, "error": repr(again)},
        )


def _confirmed_facts(intent: Intent, signature: str, verdict: Confirmed) -> dict[str, object]:
    return {
        "status": IntentStatus.CONFIRMED.value,
        "tx_signature": signature,
        "credits": intent.credits,
        "expected_amount": str(intent.amount),
        "received_amount": str(verdict.received),
        "payer": verdict.payer,
        "slot": verdict.slot,
        "overpaid": verdict.overpaid,
        "late": verdict.late,
    }


async def already_credited(svc: Services, actor: Actor, intent: Intent, signature: str) -> Credited:
    attempt = intents_db.Attempt(
        signature=signature,
        source=attempt_source(actor),
        outcome="duplicate",
        code=None,
        detail="already credited",
        request_id=actor.request_id,
    )
    # `intent` was read CONFIRMED by this signature (or is a settled pair): the attempt is
    # the only write, batched with other duplicates' and committed asynchronously
    # (core/purchases/duplicates.py).
    svc.settled.remember(intent)
    svc.fresh.forget(intent.id)
    balance = await svc.duplicates.record(svc.pool, intent, attempt)
    svc.metrics.verify_outcomes.labels("duplicate", "ok").inc()
    return Credited(intent, intent.credits, balance, duplicate=True)


async def record_attempt(
    svc: Services,
    actor: Actor,
    intent: Intent,
    signature: str,
    outcome: str,
    code: str | None,
    detail: str,
) -> None:
    if outcome != "duplicate":
        svc.metrics.verify_outcomes.labels(outcome, code or "none").inc()
    await intents_db.record_attempt(
        svc.pool,
        intent=intent,
        signature=signature,
        source=attempt_source(actor),
        outcome=outcome,
        code=code,
        detail=detail[:500],
        request_id=actor.request_id,
    )


def attempt_source(actor: Actor) -> str:
    """Where an attempt came from: the scheduler's re-checks are the recovery sweep's, but
    for the treasury watcher's, which are its own."""
    if actor.source == "scheduler":
        return "watcher" if actor.id == "watcher" else "recovery"
    return actor.source
