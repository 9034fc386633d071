"""A verify of an intent this process created asks the chain before reading the intent
(core/purchases/settled.py, fresh intents). Whatever happened to the intent meanwhile on
another replica, the answer and the records are those of a verify that read it first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from core import purchases
from core.audit import Actor
from core.chain.verdict import Pending, PendingReason, RejectCode, Rejected
from core.errors import Conflict, NotFound, Unprocessable
from core.purchases import Credited, Intent, StillPending
from core.purchases import store as intents_db
from core.services import Services
from tests.support import ScriptedVerifier, build_services, signature

ALICE = Actor("alice", "api")


@pytest.fixture
def verifier() -> ScriptedVerifier:
    return ScriptedVerifier()


@pytest.fixture
def replicas(pool: asyncpg.Pool, verifier: ScriptedVerifier) -> tuple[Services, Services]:
    """Two replicas' services on one database: each with caches of its own."""
    return build_services(pool, verifier), build_services(pool, verifier)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """The intents verifies read before asking the chain (the real read, counted)."""
    seen: list[uuid.UUID] = []
    real = intents_db.get_for_verify

    async def counted(conn: Any, intent_id: uuid.UUID, sig: str) -> Any:
        seen.append(intent_id)
        return await real(conn, intent_id, sig)

    monkeypatch.setattr(intents_db, "get_for_verify", counted)
    return seen


async def _create(svc: Services) -> Intent:
    async with svc.pool.acquire() as conn:
        return await purchases.create_intent(svc, conn, ALICE, credits=5, wallet=None)


async def _state(pool: asyncpg.Pool, intent: Intent) -> tuple[int, list[tuple[str, str | None]]]:
    credits = await pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE intent_id = $1", intent.id
    )
    attempts = await pool.fetch(
        "SELECT outcome, code FROM verification_attempts WHERE intent_id = $1 ORDER BY id",
        intent.id,
    )
    return int(credits), [(a["outcome"], a["code"]) for a in attempts]


async def test_a_fresh_intent_is_credited_without_reading_it_first(
    replicas: tuple[Services, Services], verifier: ScriptedVerifier, reads: list[uuid.UUID]
) -> None:
    here, _ = replicas
    intent = await _create(here)
    sig = signature()
    result = await purchases.verify_intent(here, ALICE, intent.id, sig)
    assert isinstance(result, Credited)
    assert not result.duplicate
    assert (result.credited, result.balance) == (5, 5)
    assert reads == []
    assert verifier.calls == 1
    assert await _state(here.pool, intent) == (1, [("confirmed", None)])
    # Settled now: a repeat is a duplicate answered without the chain or the read.
    again = await purchases.verify_intent(here, ALICE, intent.id, sig)
    assert isinstance(again, Credited)
    assert again.duplicate
    assert reads == []
    assert verifier.calls == 1
    assert len(here.fresh) == 0


async def test_someone_elses_verify_of_a_fresh_intent_is_not_found(
    replicas: tuple[Services, Services], verifier: ScriptedVerifier
) -> None:
    here, _ = replicas
    intent = await _create(here)
    with pytest.raises(NotFound):
        await purchases.verify_intent(here, Actor("mallory", "api"), intent.id, signature())
    assert verifier.calls == 0
    assert await _state(here.pool, intent) == (0, [])


async def _credited_elsewhere(there: Services, intent: Intent, sig: str) -> None:
    assert isinstance(await purchases.verify_intent(there, ALICE, intent.id, sig), Credited)


async def test_credited_elsewhere_by_the_same_payment_is_a_duplicate(
    replicas: tuple[Services, Services], reads: list[uuid.UUID]
) -> None:
    here, there = replicas
    intent = await _create(here)
    sig = signature()
    await _credited_elsewhere(there, intent, sig)
    result = await purchases.verify_intent(here, ALICE, intent.id, sig)
    assert isinstance(result, Credited)
    assert result.duplicate
    assert result.balance == 5
    credits, attempts = await _state(here.pool, intent)
    assert credits == 1
    assert attempts == [("confirmed", None), ("duplicate", None)]


async def test_credited_elsewhere_by_another_payment_is_refused_as_if_read_first(
    replicas: tuple[Services, Services], verifier: ScriptedVerifier, reads: list[uuid.UUID]
) -> None:
    here, there = replicas
    intent = await _create(here)
    await _credited_elsewhere(there, intent, signature())
    calls = verifier.calls
    with pytest.raises(Conflict) as refused:
        await purchases.verify_intent(here, ALICE, intent.id, signature())
    assert refused.value.code == "intent_already_confirmed"
    assert verifier.calls == calls + 1  # asked once; the read after it used that answer
    credits, attempts = await _state(here.pool, intent)
    assert credits == 1
    assert attempts == [("confirmed", None), ("conflict", "intent_already_confirmed")]
    # No longer fresh here: the next verify reads the intent before the chain.
    with pytest.raises(Conflict):
        await purchases.verify_intent(here, ALICE, intent.id, signature())
    assert verifier.calls == calls + 1


async def test_rejected_elsewhere_is_refused_as_if_read_first(
    replicas: tuple[Services, Services], verifier: ScriptedVerifier
) -> None:
    here, there = replicas
    intent = await _create(here)
    late = signature()
    verifier.script[late] = Rejected(RejectCode.EXPIRED, "paid after the intent expired")
    with pytest.raises(Unprocessable):
        await purchases.verify_intent(there, ALICE, intent.id, late)
    with pytest.raises(Conflict) as refused:
        await purchases.verify_intent(here, ALICE, intent.id, signature())
    assert refused.value.code == "intent_rejected"
    credits, attempts = await _state(here.pool, intent)
    assert credits == 0
    assert attempts == [("rejected", "paid_after_expiry"), ("conflict", "intent_rejected")]


async def test_a_payment_the_chain_does_not_confirm_is_recorded_once_with_one_chain_call(
    replicas: tuple[Services, Services], verifier: ScriptedVerifier, reads: list[uuid.UUID]
) -> None:
    here, _ = replicas
    intent = await _create(here)
    waiting, short = signature(), signature()
    verifier.script[waiting] = Pending(PendingReason.NOT_FINAL, "confirmed, not finalized")
    verifier.script[short] = Rejected(RejectCode.UNDERPAID, "received 1 of 50000")
    pending = await purchases.verify_intent(here, ALICE, intent.id, waiting)
    assert isinstance(pending, StillPending)
    assert pending.reason is PendingReason.NOT_FINAL
    with pytest.raises(Unprocessable):
        await purchases.verify_intent(here, ALICE, intent.id, short)
    assert verifier.calls == 2  # each verdict asked for once
    assert reads == [intent.id, intent.id]  # read after the chain, to answer as before
    credits, attempts = await _state(here.pool, intent)
    assert credits == 0
    assert attempts == [("pending", "tx_not_final"), ("rejected", "underpaid")]
    # Underpaid leaves the intent open, and still fresh: the right payment credits it.
    assert isinstance(await purchases.verify_intent(here, ALICE, intent.id, signature()), Credited)
    assert reads == [intent.id, intent.id]


async def test_only_pending_intents_without_a_payment_are_kept_fresh(
    replicas: tuple[Services, Services],
) -> None:
    here, _ = replicas
    intent = await _create(here)
    assert here.fresh.get(intent.id) == intent
    settled = replace(intent, status=purchases.IntentStatus.CONFIRMED, tx_signature=signature())
    other = replace(settled, id=uuid.uuid4())
    here.fresh.remember(other)
    assert here.fresh.get(other.id) is None
