"""Reconciliation against the real database: each anomaly made for real, found exactly,
not new on the next run, and resolved (with zero drift) once corrected."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core import adjustments, ledger
from core.adjustments import Adjustment, AdjustmentKind, AdjustmentPolicy, DecisionKind, new_request
from core.audit import Actor
from core.chain.verdict import Confirmed, RejectCode, Rejected
from core.ledger import LedgerKind, debit_postings, purchase_postings
from core.recon import ChainLookup, ReconRun, latest_run, open_findings, run_reconciliation
from core.services import Services
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature

pytestmark = pytest.mark.timeout(60)

ONCALL = Actor("U_ONCALL", "slack")
MANAGER = Actor("U_MGR", "slack")
POLICY = AdjustmentPolicy(
    managers=frozenset({MANAGER.id}), two_approvals_above=10**9, ttl=timedelta(hours=1)
)
SLA = timedelta(hours=1)


# --- helpers (also used by the other test_recon modules) ---------------------------------------


async def recon(
    svc: Services,
    *,
    chain: ChainLookup | None = None,
    now: datetime | None = None,
    full: bool = False,
    **kwargs: Any,
) -> ReconRun:
    """One run as the scheduler or an operator starts it."""
    return await run_reconciliation(
        svc.pool,
        chain,
        now=now or datetime.now(UTC),
        actor=ONCALL,
        pending_sla=SLA,
        payment=svc.payment,
        full=full,
        **kwargs,
    )


def kinds(run: ReconRun) -> list[str]:
    return sorted(f.kind for f in run.findings)


async def create_intent(svc: Services, user: str, credits: int = 3) -> dict[str, Any]:
    async with api_client(svc) as api:
        resp = await api.post(
            "/v1/purchase-intents", json={"credits": credits}, headers=bearer(user)
        )
        assert resp.status == 201, await resp.text()
        intent: dict[str, Any] = await resp.json()
        return intent


async def verify(svc: Services, user: str, intent_id: str, sig: str) -> tuple[int, Any]:
    async with api_client(svc) as api:
        resp = await api.post(
            f"/v1/purchase-intents/{intent_id}/verify",
            json={"signature": sig},
            headers=bearer(user),
        )
        return resp.status, await resp.json()


async def buy(svc: Services, user: str, credits: int = 3) -> tuple[dict[str, Any], str]:
    """A purchase through the API, confirmed by the scripted chain."""
    intent = await create_intent(svc, user, credits)
    sig = signature()
    status, body = await verify(svc, user, intent["id"], sig)
    assert status == 200, body
    return intent, sig


async def adjust(
    pool: asyncpg.Pool,
    user: str,
    credits: int,
    refs: Sequence[str] = (),
    *,
    kind: AdjustmentKind | None = None,
) -> Adjustment:
    """An adjustment requested by on-call and approved by a manager: applied."""
    request = new_request(
        user_id=user,
        credits=credits,
        reason="reconciliation correction",
        policy=POLICY,
        now=datetime.now(UTC),
        refs=list(refs),
        kind=kind,
    )
    async with pool.acquire() as conn:
        adj = await adjustments.create(conn, ONCALL, request)
        result = await adjustments.decide(
            conn, MANAGER, adj.id, DecisionKind.APPROVE, POLICY, datetime.now(UTC)
        )
    assert result.ledger_tx is not None
    return result.adjustment


async def reverse(pool: asyncpg.Pool, ledger_tx: int) -> Adjustment:
    """A duplicate reversal of `ledger_tx`, approved."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        adj = await adjustments.reverse_request(
            conn, ONCALL, ledger_tx, "reverse the excess credit", policy=POLICY, now=now
        )
        await adjustments.decide(conn, MANAGER, adj.id, DecisionKind.APPROVE, POLICY, now)
    return adj


@asynccontextmanager
async def superuser(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection with triggers off (`session_replication_role = replica`), to corrupt data
    the way only a person at a psql prompt or a bug below the application could."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            pytest.skip("needs a superuser to set session_replication_role")
        await conn.execute("SET session_replication_role = replica")
        try:
            yield conn
        finally:
            await conn.execute("RESET session_replication_role")


async def assert_found_once_then_resolved(
    svc: Services, kind: str, fix: Any, *, now: datetime | None = None
) -> tuple[ReconRun, ReconRun, ReconRun]:
    """The anomaly is found exactly (and alone), is not new on a second run, and is resolved
    with zero drift once `fix()` has run."""
    first = await recon(svc, now=now)
    assert kinds(first) == [kind], [f.detail for f in first.findings]
    assert [f.fingerprint for f in first.new_findings] == [first.findings[0].fingerprint]
    assert not first.zero_drift
    second = await recon(svc, now=now and now + timedelta(minutes=1))
    assert [f.fingerprint for f in second.findings] == [first.findings[0].fingerprint]
    assert second.new_findings == []
    assert second.resolved_findings == []
    assert not second.zero_drift
    await fix()
    third = await recon(svc, now=now and now + timedelta(minutes=2))
    assert third.findings == [], [f.detail for f in third.findings]
    assert [f.fingerprint for f in third.resolved_findings] == [first.findings[0].fingerprint]
    assert third.zero_drift
    assert third.drift_credits == 0
    assert third.drift_tokens == 0
    return first, second, third


@pytest.fixture
def verifier() -> ScriptedVerifier:
    return ScriptedVerifier()


@pytest.fixture
def svc(pool: asyncpg.Pool, verifier: ScriptedVerifier) -> Services:
    return build_services(pool, verifier)


# --- clean ledgers ----------------------------------------------------------------------------


async def test_clean_purchases_reconcile_with_zero_drift(svc: Services) -> None:
    await buy(svc, "alice", 3)
    await buy(svc, "bob", 5)
    run = await recon(svc)
    assert run.findings == []
    assert run.zero_drift
    assert run.full
    t = run.totals
    assert (t.confirmed_intents, t.purchase_transactions) == (2, 2)
    assert (t.expected_credits, t.applied_credits, t.ledger_total) == (8, 8, 0)
    assert t.expected_tokens == t.received_tokens == 80_000
    stored = await latest_run(svc.pool)
    assert stored is not None
    assert (stored.id, stored.totals, stored.zero_drift) == (run.id, run.totals, True)
    audit = await svc.pool.fetchrow(
        "SELECT actor, after FROM audit_log WHERE action = 'recon.run' AND subject = $1",
        f"recon_run:{run.id}",
    )
    assert audit is not None
    assert audit["actor"] == ONCALL.id
    assert audit["after"]["zero_drift"] is True


async def test_incremental_runs_carry_the_totals_forward(svc: Services) -> None:
    await buy(svc, "alice", 3)
    first = await recon(svc)
    await buy(svc, "bob", 5)
    await create_intent(svc, "carol", 2)  # pending, not stale
    second = await recon(svc)
    assert (first.mode, second.mode) == ("full", "incremental")
    assert (second.totals.confirmed_intents, second.totals.expected_credits) == (2, 8)
    assert second.totals.applied_credits == 8
    assert second.zero_drift
    idle = await recon(svc)
    assert idle.totals == second.totals
    full = await recon(svc, full=True)
    assert full.totals.flows == idle.totals.flows


async def test_concurrent_verifies_of_one_signature_credit_once(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier(delay=0.2))
    a = await create_intent(svc, "alice", 3)
    b = await create_intent(svc, "bob", 3)
    sig = signature()
    results = await asyncio.gather(
        verify(svc, "alice", a["id"], sig), verify(svc, "bob", b["id"], sig)
    )
    assert sorted(status for status, _ in results) == [200, 409]
    run = await recon(svc)
    assert run.findings == []
    assert run.zero_drift


async def test_runs_are_serialized_and_each_is_stored(svc: Services) -> None:
    await buy(svc, "alice", 3)
    runs = await asyncio.gather(*(recon(svc, full=True) for _ in range(3)))
    assert len({r.id for r in runs}) == 3
    assert all(r.zero_drift for r in runs)
    assert await svc.pool.fetchval("SELECT count(*) FROM recon_runs") == 3


# --- anomalies, one by one ---------------------------------------------------------------------


async def test_cached_balance_corrupted_in_sql(svc: Services) -> None:
    await buy(svc, "alice", 3)
    async with superuser(svc.pool) as conn:
        await conn.execute("UPDATE user_balances SET balance = balance + 7 WHERE user_id = 'alice'")

    async def fix() -> None:
        async with superuser(svc.pool) as conn:
            await conn.execute(
                "UPDATE user_balances SET balance = balance - 7 WHERE user_id = 'alice'"
            )

    first, _, _ = await assert_found_once_then_resolved(svc, "balance_mismatch", fix)
    [f] = first.findings
    assert (f.user_ids, f.credits, f.severity) == (("alice",), -7, "critical")
    row = await svc.pool.fetchrow(
        "SELECT first_seen_run, status, resolved_run FROM recon_findings WHERE fingerprint = $1",
        f.fingerprint,
    )
    assert row is not None
    assert (row["first_seen_run"], row["status"]) == (first.id, "resolved")


async def test_a_second_credit_for_one_payment_and_its_reversal(svc: Services) -> None:
    _, sig = await buy(svc, "alice", 4)
    extra: list[Adjustment] = []

    async def fix() -> None:
        assert extra[0].applied_ledger_tx is not None
        await reverse(svc.pool, extra[0].applied_ledger_tx)

    # the credit was late; on-call also applied it by hand, naming the payment
    extra.append(await adjust(svc.pool, "alice", 4, [sig]))
    first, _, third = await assert_found_once_then_resolved(svc, "duplicate_signature", fix)
    [f] = first.findings
    assert (f.signatures, f.credits, f.user_ids) == ((sig,), -4, ("alice",))
    assert first.drift_credits == -4
    assert await ledger.balance(svc.pool, "alice") == 4
    assert third.totals.applied_credits == third.totals.expected_credits == 4


async def test_one_signature_confirmed_for_two_intents(svc: Services) -> None:
    a, sig = await buy(svc, "alice", 3)
    b, _ = await buy(svc, "bob", 5)
    clean = await recon(svc)
    assert clean.zero_drift
    # a verify bug: bob's intent recorded as confirmed by alice's payment
    async with superuser(svc.pool) as conn:
        await conn.execute(
            """INSERT INTO verification_attempts (intent_id, user_id, signature, source, outcome)
               VALUES ($1, 'bob', $2, 'api', 'confirmed')""",
            uuid.UUID(b["id"]),
            sig,
        )
    found = await recon(svc)  # incremental: the new attempt brings the signature in
    assert found.mode == "incremental"
    assert kinds(found) == ["duplicate_signature"]
    [f] = found.findings
    assert set(f.intent_ids) == {a["id"], b["id"]}
    assert (f.signatures, f.credits) == ((sig,), -3)
    again = await recon(svc, full=True)
    assert [x.fingerprint for x in again.findings] == [f.fingerprint]
    assert again.new_findings == []


async def test_failed_verification_then_a_successful_payment(
    svc: Services, verifier: ScriptedVerifier
) -> None:
    intent = await create_intent(svc, "alice", 3)
    first_try, paid = signature(), signature()
    verifier.script[first_try] = Rejected(RejectCode.UNBOUND_PAYMENT, "no reference")
    status, _ = await verify(svc, "alice", intent["id"], first_try)
    assert status == 422
    status, _ = await verify(svc, "alice", intent["id"], paid)
    assert status == 200

    async def fix() -> None:  # the user paid twice: the first payment is credited by hand
        await adjust(svc.pool, "alice", 3, [first_try])

    first, _, _ = await assert_found_once_then_resolved(svc, "failed_then_succeeded", fix)
    [f] = first.findings
    assert (f.severity, f.signatures, f.intent_ids) == ("warning", (first_try,), (intent["id"],))


async def test_a_failure_that_moved_no_money_is_listed_but_not_drift(
    svc: Services, verifier: ScriptedVerifier
) -> None:
    intent = await create_intent(svc, "alice", 3)
    wrong = signature()
    verifier.script[wrong] = Rejected(RejectCode.WRONG_RECIPIENT, "paid someone else")
    assert (await verify(svc, "alice", intent["id"], wrong))[0] == 422
    assert (await verify(svc, "alice", intent["id"], signature()))[0] == 200
    run = await recon(svc)
    assert [(f.kind, f.severity) for f in run.findings] == [("failed_then_succeeded", "info")]
    assert run.zero_drift
    assert run.blocking_findings == []


async def test_intent_stuck_pending_beyond_the_sla(svc: Services) -> None:
    intent = await create_intent(svc, "alice", 3)
    later = datetime.now(UTC) + timedelta(hours=2)

    async def fix() -> None:
        assert (await verify(svc, "alice", intent["id"], signature()))[0] == 200

    first, _, _ = await assert_found_once_then_resolved(svc, "stale_pending", fix, now=later)
    assert first.findings[0].intent_ids == (intent["id"],)
    on_time = await recon(svc)  # an hour-old SLA is not broken by a fresh intent
    assert on_time.findings == []


async def test_negative_balance_after_an_approved_reversal(svc: Services) -> None:
    goodwill = await adjust(svc.pool, "carol", 9, kind=AdjustmentKind.OTHER)
    async with svc.pool.acquire() as conn, conn.transaction():
        await ledger.post(
            conn, kind=LedgerKind.DEBIT, postings=debit_postings("carol", 9), created_by="shop"
        )
    assert goodwill.applied_ledger_tx is not None
    await reverse(svc.pool, goodwill.applied_ledger_tx)
    assert await ledger.balance(svc.pool, "carol") == -9

    async def fix() -> None:
        await adjust(svc.pool, "carol", 9, kind=AdjustmentKind.OTHER)

    first, _, _ = await assert_found_once_then_resolved(svc, "negative_balance", fix)
    assert (first.findings[0].user_ids, first.findings[0].credits) == (("carol",), 9)


async def test_confirmed_intent_whose_ledger_write_failed(svc: Services) -> None:
    intent = await create_intent(svc, "alice", 6)
    sig = signature()
    async with superuser(svc.pool) as conn:  # confirmed, but the credit never got written
        await conn.execute(
            """UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = $2,
                   received_amount = amount, confirmed_at = now(), updated_at = now()
               WHERE id = $1""",
            uuid.UUID(intent["id"]),
            sig,
        )

    async def fix() -> None:  # the runbook's controlled manual reconciliation adjustment
        await adjust(svc.pool, "alice", 6, [sig, intent["id"]])

    first, _, third = await assert_found_once_then_resolved(svc, "confirmed_without_credit", fix)
    assert (first.findings[0].credits, first.drift_credits) == (6, 6)
    assert (third.totals.purchase_credits, third.totals.correction_credits) == (0, 6)
    assert third.totals.corrections == 1


async def test_purchase_credit_for_an_intent_that_is_not_confirmed(svc: Services) -> None:
    intent = await create_intent(svc, "alice", 2)
    async with svc.pool.acquire() as conn, conn.transaction():
        tx = await ledger.post(
            conn,
            kind=LedgerKind.PURCHASE,
            postings=purchase_postings("alice", 2),
            created_by="bug",
            intent_id=uuid.UUID(intent["id"]),
            purchase_signature=signature(),
        )

    async def fix() -> None:
        await reverse(svc.pool, tx)

    first, _, _ = await assert_found_once_then_resolved(svc, "credit_without_confirmed_intent", fix)
    assert (first.findings[0].credits, first.drift_credits) == (-2, -2)


async def test_overpayment_then_credited_by_hand(svc: Services, verifier: ScriptedVerifier) -> None:
    intent = await create_intent(svc, "alice", 3)
    sig = signature()
    price = svc.payment.price_per_credit
    verifier.script[sig] = Confirmed(
        received=int(intent["amount"]) + 2 * price,
        payer=None,
        slot=1,
        block_time=datetime.now(UTC),
        overpaid=True,
    )
    assert (await verify(svc, "alice", intent["id"], sig))[0] == 200

    async def fix() -> None:  # the two credits' worth the payer sent in excess
        await adjust(svc.pool, "alice", 2, [sig])

    first, _, third = await assert_found_once_then_resolved(svc, "overpayment", fix)
    assert (first.findings[0].tokens, first.drift_tokens) == (2 * price, 2 * price)
    assert third.drift_credits == 0  # crediting what was overpaid is not a duplicate


async def test_payment_after_expiry_and_its_grace(
    svc: Services, verifier: ScriptedVerifier
) -> None:
    intent = await create_intent(svc, "alice", 3)
    late = signature()
    verifier.script[late] = Rejected(RejectCode.EXPIRED, "paid after expiry")
    assert (await verify(svc, "alice", intent["id"], late))[0] == 422

    async def fix() -> None:
        await adjust(svc.pool, "alice", 3, [late, intent["id"]])

    first, _, _ = await assert_found_once_then_resolved(svc, "late_payment", fix)
    assert (first.findings[0].severity, first.findings[0].signatures) == ("warning", (late,))


async def test_late_payment_within_the_grace_is_listed_not_drift(
    svc: Services, verifier: ScriptedVerifier
) -> None:
    intent = await create_intent(svc, "alice", 3)
    sig = signature()
    verifier.script[sig] = Confirmed(
        received=int(intent["amount"]), payer=None, slot=1, block_time=None, late=True
    )
    assert (await verify(svc, "alice", intent["id"], sig))[0] == 200
    run = await recon(svc)
    assert [(f.kind, f.severity) for f in run.findings] == [("late_payment", "info")]
    assert run.zero_drift


async def test_purchase_credited_to_another_user(svc: Services) -> None:
    await buy(svc, "alice", 1)
    assert (await recon(svc)).zero_drift
    intent = await create_intent(svc, "alice", 5)
    sig = signature()
    async with svc.pool.acquire() as conn, conn.transaction():  # a bug posts to bob
        tx = await ledger.post(
            conn,
            kind=LedgerKind.PURCHASE,
            postings=purchase_postings("bob", 5),
            created_by="bug",
            intent_id=uuid.UUID(intent["id"]),
            purchase_signature=sig,
        )
        await conn.execute(
            """UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = $2,
                   received_amount = amount, confirmed_at = now(), updated_at = now()
               WHERE id = $1""",
            uuid.UUID(intent["id"]),
            sig,
        )
    incremental = await recon(svc)
    assert (incremental.mode, kinds(incremental)) == ("incremental", ["purchase_mismatch"])
    [f] = incremental.findings
    assert set(f.user_ids) == {"alice", "bob"}
    assert f.ledger_tx_ids == (tx,)
    full = await recon(svc, full=True)  # the checksums disagree, the exact join finds it
    assert [x.fingerprint for x in full.findings] == [f.fingerprint]
    assert full.new_findings == []


async def test_unbalanced_ledger_transaction_written_with_triggers_off(svc: Services) -> None:
    await buy(svc, "alice", 2)
    async with superuser(svc.pool) as conn:
        tx = await conn.fetchval(
            "INSERT INTO ledger_transactions (kind, created_by) VALUES ('adjustment', 'psql') "
            "RETURNING id"
        )
        account = await conn.fetchval("SELECT id FROM accounts WHERE user_id = 'alice'")
        await conn.execute(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES ($1, $2, 5)",
            tx,
            account,
        )
    first = await recon(svc)
    assert kinds(first) == ["balance_mismatch", "ledger_not_zero_sum", "unbalanced_transaction"]
    unbalanced = next(f for f in first.findings if f.kind == "unbalanced_transaction")
    assert (unbalanced.ledger_tx_ids, unbalanced.user_ids) == ((tx,), ("alice",))
    second = await recon(svc)
    assert second.new_findings == []
    assert len(second.findings) == 3
    async with superuser(svc.pool) as conn:  # what restoring the snapshot would do
        await conn.execute("DELETE FROM ledger_entries WHERE transaction_id = $1", tx)
        await conn.execute("DELETE FROM ledger_transactions WHERE id = $1", tx)
    # incremental runs rely on the ledger being append-only: after a restore, a full run
    third = await recon(svc, full=True)
    assert third.findings == []
    assert len(third.resolved_findings) == 3
    assert third.zero_drift


# --- windows and the stored record ------------------------------------------------------------


async def test_window_run_covers_intents_created_in_it(svc: Services) -> None:
    await buy(svc, "alice", 3)
    now = datetime.now(UTC)
    recent = await recon(svc, window_start=now - timedelta(hours=1))
    assert (recent.mode, recent.totals.confirmed_intents, recent.zero_drift) == ("window", 1, True)
    assert recent.window_start == now - timedelta(hours=1)
    past = await recon(
        svc, window_start=now - timedelta(days=2), window_end=now - timedelta(days=1)
    )
    assert past.totals.confirmed_intents == 0
    # a window run does not move the watermark: the next run continues from the last full one
    assert (await recon(svc)).mode == "full"


async def test_window_run_checks_open_findings_again(svc: Services) -> None:
    await buy(svc, "alice", 3)
    async with superuser(svc.pool) as conn:
        await conn.execute("UPDATE user_balances SET balance = 0 WHERE user_id = 'alice'")
    assert kinds(await recon(svc)) == ["balance_mismatch"]
    async with superuser(svc.pool) as conn:
        await conn.execute("UPDATE user_balances SET balance = 3 WHERE user_id = 'alice'")
    window = await recon(svc, window_start=datetime.now(UTC) - timedelta(minutes=5))
    assert [f.kind for f in window.resolved_findings] == ["balance_mismatch"]
    assert await open_findings(svc.pool) == []


async def test_stored_runs_are_a_record(svc: Services) -> None:
    run = await recon(svc)
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await svc.pool.execute("UPDATE recon_runs SET zero_drift = false WHERE id = $1", run.id)
    with pytest.raises(asyncpg.CheckViolationError):  # zero drift must be provable from the row
        await svc.pool.execute(
            """INSERT INTO recon_runs (started_at, finished_at, mode, full_run, window_end,
                   watermark, totals, drift_credits, drift_tokens, zero_drift, chain_checked,
                   open_findings, blocking_findings, new_findings, resolved_findings, actor,
                   source)
               VALUES (now(), now(), 'full', true, now(), '{}', '{}', 5, 0, true, false,
                       0, 0, 0, 0, 'x', 'cli')"""
        )


async def test_latest_run_and_open_findings_read_the_store(svc: Services) -> None:
    assert await latest_run(svc.pool) is None
    await create_intent(svc, "alice", 3)
    run = await recon(svc, now=datetime.now(UTC) + timedelta(hours=3))
    stored = await latest_run(svc.pool)
    assert stored is not None
    assert [f.fingerprint for f in stored.findings] == [f.fingerprint for f in run.findings]
    assert [f.fingerprint for f in stored.new_findings] == [f.fingerprint for f in run.findings]
    assert [f.fingerprint for f in await open_findings(svc.pool)] == [
        f.fingerprint for f in run.findings
    ]
