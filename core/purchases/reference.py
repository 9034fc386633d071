"""Verify without a signature: find the intent's payment by its Solana Pay reference.

A frontend that never got the signature back from the wallet (a phone wallet paying a QR
code) calls verify with an empty body. The payment is looked up where it is cheapest first:

    the treasury watcher recorded an inflow bound to the intent  -> verify those
    otherwise, every successful transaction carrying the intent's reference, oldest first
      (`getSignaturesForAddress(reference)`, paged back with `before` to the first one)

Each goes through the verify of a signature (the same rules, attempts recorded with the
caller's source, the same exactly-once `credit_in`). The first that credits answers; if none
does, a payment not final yet answers pending, else the oldest refusal is raised, as a
verify of that signature would. A signature already refused for this intent is not asked
again (its recorded refusal answers): a reference anyone can add to their own transactions
must not cost a `getTransaction` per such transaction on every poll.

`Flights` coalesces the lookups of one intent in a process: while one is in flight,
concurrent callers await its answer instead of asking the chain again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from core.audit import Actor
from core.chain.rpc import RpcUnavailable
from core.chain.verdict import PendingReason
from core.errors import Conflict, NotFound, PayopsError, Unprocessable
from core.purchases import store as intents_db
from core.purchases.credit import Credited, already_credited
from core.purchases.intents import IntentStatus, precheck
from core.purchases.service import (
    VERIFY_RETRY_AFTER_SECONDS,
    StillPending,
    VerifyResult,
    require_gate_open,
    verify_checked,
)
from core.services import ReferenceHistory, Services

PAGE = 1000  # getSignaturesForAddress's largest page

K = TypeVar("K")
V = TypeVar("V")


class Flights(Generic[K, V]):
    """At most one piece of work in flight per key; callers of a key in flight share its
    answer (or its exception). The work runs as a task of its own, so a caller that goes
    away (a client hanging up) cancels neither it nor the other callers' wait."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    def in_flight(self) -> int:
        return len(self._running)

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(work())
            self._running[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have gone away


def payments_oldest_first(pages: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """The successful signatures of `getSignaturesForAddress` pages (each newest first, the
    next page older), oldest first, each once. A failed transaction moved no tokens."""
    seen: dict[str, None] = {}
    for page in pages:
        for record in page:
            signature = record.get("signature")
            if signature and record.get("err") is None:
                seen.setdefault(str(signature), None)
    return list(reversed(seen))


async def reference_payments(
    chain: ReferenceHistory, reference: str, *, page: int = PAGE
) -> list[str]:
    """Every successful transaction carrying `reference`, oldest first: pages read back with
    `before` until a short page (a node that ignores `before` cannot loop us forever)."""
    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    while True:
        batch = await chain.get_signatures_for_address(reference, limit=page, before=before)
        pages.append(batch)
        if len(batch) < page or str(batch[-1].get("signature")) == before:
            return payments_oldest_first(pages)
        before = str(batch[-1]["signature"])


async def verify_by_reference(
    svc: Services,
    actor: Actor,
    intent_id: uuid.UUID,
    *,
    flights: Flights[uuid.UUID, VerifyResult] | None = None,
    page: int = PAGE,
) -> VerifyResult:
    """Verify the actor's intent by the payment carrying its reference (see module).

    Owner-checked like `verify_intent` (anyone else: NotFound) and answering as it does:
    Credited, StillPending (`payment_not_found` when no transaction carries the reference
    yet), or Conflict / Unprocessable / VerifyPaused. A CONFIRMED intent answers without
    asking the chain."""
    intent = await intents_db.get(svc.pool, intent_id)
    if intent is None or intent.user_id != actor.id:
        raise NotFound("no such purchase intent", code="intent_not_found")
    if intent.status is IntentStatus.CONFIRMED and intent.tx_signature is not None:
        return await already_credited(svc, actor, intent, intent.tx_signature)
    precheck(intent, "")  # a REJECTED intent: 409 intent_rejected
    await require_gate_open(svc)

    def work() -> Coroutine[Any, Any, VerifyResult]:
        return _look_up(svc, actor, intent_id, page)

    return await (work() if flights is None else flights.run(intent_id, work))


async def _look_up(svc: Services, actor: Actor, intent_id: uuid.UUID, page: int) -> VerifyResult:
    # Read again: a lookup that just landed may have credited it.
    intent = await intents_db.get(svc.pool, intent_id)
    if intent is None:
        raise NotFound("no such purchase intent", code="intent_not_found")
    if intent.status is IntentStatus.CONFIRMED and intent.tx_signature is not None:
        return await already_credited(svc, actor, intent, intent.tx_signature)
    signatures = await intents_db.bound_inflows(svc.pool, intent_id)
    if not signatures:
        if svc.chain is None:
            return _pending(svc, intent, PendingReason.RPC_UNAVAILABLE, "no chain lookup wired")
        try:
            signatures = await reference_payments(svc.chain, intent.reference, page=page)
        except RpcUnavailable as exc:
            return _pending(svc, intent, PendingReason.RPC_UNAVAILABLE, str(exc))
    if not signatures:
        return _pending(
            svc,
            intent,
            PendingReason.PAYMENT_NOT_FOUND,
            "no transaction carrying this intent's reference was found yet",
        )
    return await _verify_each(svc, actor, intent_id, signatures)


def _pending(svc: Services, intent: Any, reason: PendingReason, detail: str) -> StillPending:
    # No attempt row: an attempt is about a signature, and there is none.
    svc.metrics.verify_outcomes.labels("pending", reason.value).inc()
    return StillPending(intent, reason, detail, VERIFY_RETRY_AFTER_SECONDS)


async def _verify_each(
    svc: Services, actor: Actor, intent_id: uuid.UUID, signatures: Sequence[str]
) -> VerifyResult:
    decided = await intents_db.refused_signatures(svc.pool, intent_id)
    pending: StillPending | None = None
    refusal: PayopsError | None = None
    for signature in signatures:
        if signature in decided:
            refusal = refusal or _refused_before(signature, *decided[signature])
            continue
        # Read per signature: a refusal before may have closed the intent.
        intent, owner = await intents_db.get_for_verify(svc.pool, intent_id, signature)
        if intent is None:
            raise NotFound("no such purchase intent", code="intent_not_found")
        try:
            result = await verify_checked(svc, actor, intent, signature, owner)
        except (Conflict, Unprocessable) as exc:
            refusal = refusal or exc
            continue
        if isinstance(result, Credited):
            return result
        pending = pending or result
    if pending is not None:
        return pending
    assert refusal is not None  # every signature was either refused or answered above
    raise refusal


def _refused_before(signature: str, outcome: str, code: str) -> PayopsError:
    message = f"the payment {signature} carrying this intent's reference was refused: {code}"
    if outcome == "conflict":
        return Conflict(message, code=code)
    return Unprocessable(message, code=code)
