"""Triage against real states, built through the real purchase use cases."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from solders.keypair import Keypair

from core import ledger, purchases
from core.audit import Actor
from core.chain.verdict import Pending, PendingReason, RejectCode, Rejected
from core.errors import Unprocessable
from core.purchases import Intent
from core.services import Services
from core.triage import (
    DiagnosisKind,
    Scope,
    SubjectKind,
    classify_subject,
    gather,
    parse_window,
    triage,
    triage_window,
    window_summary,
)
from tests.support import ScriptedVerifier, build_services, signature

SLA = timedelta(hours=1)

FAILING_CREDIT = """
CREATE FUNCTION test_fail_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
CREATE TRIGGER test_fail_entry BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION test_fail_entry();
"""


def now() -> datetime:
    # a little ahead, so rows the database stamped with now() fall inside "the last hour"
    return datetime.now(UTC) + timedelta(seconds=1)


async def create(svc: Services, user: str, credits: int = 5, wallet: str | None = None) -> Intent:
    async with svc.pool.acquire() as conn:
        return await purchases.create_intent(
            svc, conn, Actor(user, "api"), credits=credits, wallet=wallet
        )


async def verify(svc: Services, intent: Intent, sig: str, request_id: str) -> object:
    actor = Actor(intent.user_id, "api", request_id)
    return await purchases.verify_intent(svc, actor, intent.id, sig)


class FinalizedChain:
    """getSignatureStatuses as a node answers for finalized, successful transactions."""

    async def get_signature_statuses(
        self, signatures: Sequence[str], *, search_transaction_history: bool = True
    ) -> list[dict[str, Any] | None]:
        return [
            {"slot": 77, "confirmations": None, "err": None, "confirmationStatus": "finalized"}
            for _ in signatures
        ]


async def test_triage_finds_tx_rejected_with_its_code_and_request_ids(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    intent = await create(svc, "alice")
    sig = signature()
    verifier.script[sig] = Pending(PendingReason.NOT_FINAL)
    await verify(svc, intent, sig, "req-pending")
    verifier.script[sig] = Rejected(RejectCode.WRONG_MINT, "paid with another mint")
    with pytest.raises(Unprocessable):
        await verify(svc, intent, sig, "req-rejected")

    for text in (str(intent.id), "alice", sig):
        report = await triage(pool, None, text, now(), SLA)
        assert report.primary.kind is DiagnosisKind.TX_REJECTED, text
        assert "wrong_mint x1" in report.primary.summary
        assert report.primary.request_ids == ["req-pending", "req-rejected"]
        assert "paid with another mint" in report.primary.evidence_lines[0]


async def test_triage_finds_ledger_write_failed_when_the_credit_rolled_back(
    pool: asyncpg.Pool,
) -> None:
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    intent = await create(svc, "alice", credits=9)
    sig = signature()
    verifier.script[sig] = Pending(PendingReason.NOT_FINAL, "seen at confirmed")
    await verify(svc, intent, sig, "req-early")
    del verifier.script[sig]  # the chain finalizes: the verifier confirms it
    await pool.execute(FAILING_CREDIT)
    with pytest.raises(asyncpg.RaiseError):
        await verify(svc, intent, sig, "req-credit")

    report = await triage(pool, FinalizedChain(), "alice", now(), SLA)
    [only] = report.diagnoses
    assert only.kind is DiagnosisKind.LEDGER_WRITE_FAILED
    assert "9 credits missing for alice" in only.summary
    assert f"signature {sig} is finalized on chain without error" in only.evidence_lines[0]
    # the credit rolled back, and its failure is on record beside the earlier attempt
    assert only.request_ids == ["req-early", "req-credit"]
    assert "latest attempt: credit_failed ledger_write_failed: received" in only.evidence_lines[0]
    assert "RaiseError" in only.evidence_lines[0]
    assert report.evidence.chain[0].slot == 77


async def test_triage_finds_ledger_write_failed_for_a_confirmed_intent_without_credit(
    pool: asyncpg.Pool,
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    intent = await create(svc, "alice")
    sig = signature()
    # a write path that confirms without crediting (purchase_intents has no guard trigger)
    await pool.execute(
        """UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = $2,
               confirmed_at = now() WHERE id = $1""",
        intent.id,
        sig,
    )
    report = await triage(pool, None, sig, now(), SLA)
    assert [d.kind for d in report.diagnoses] == [DiagnosisKind.LEDGER_WRITE_FAILED]
    assert "is CONFIRMED by" in report.primary.evidence_lines[0]


async def test_triage_finds_duplicate_credit_from_a_verify_race_without_constraints(
    pool: asyncpg.Pool,
) -> None:
    # A database missing the exactly-once constraints: the application's own check alone
    # lets two concurrent verifies of one payment through on two intents.
    await pool.execute(
        """ALTER TABLE purchase_intents DROP CONSTRAINT purchase_intents_tx_signature_key;
           ALTER TABLE ledger_transactions
               DROP CONSTRAINT ledger_transactions_purchase_signature_key"""
    )
    svc = build_services(pool, ScriptedVerifier(delay=0.2))
    first, second = await create(svc, "alice", 5), await create(svc, "alice", 5)
    sig = signature()
    await asyncio.gather(verify(svc, first, sig, "req-a"), verify(svc, second, sig, "req-b"))
    assert await ledger.balance(pool, "alice") == 10

    for text in (sig, "alice", str(second.id)):
        report = await triage(pool, None, text, now(), SLA)
        assert report.primary.kind is DiagnosisKind.DUPLICATE_CREDIT, text
        assert "5 excess credits for alice" in report.primary.summary
        assert sorted(report.primary.request_ids) == ["req-a", "req-b"]
    by_sig = await triage(pool, None, sig, now(), SLA)
    assert {i.id for i in by_sig.evidence.intents} == {first.id, second.id}


async def test_triage_finds_duplicate_credit_written_behind_the_triggers(
    pool: asyncpg.Pool,
) -> None:
    if not await pool.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        pytest.skip("needs a superuser to set session_replication_role")
    svc = build_services(pool, ScriptedVerifier())
    paid, unpaid = await create(svc, "alice", 5), await create(svc, "alice", 4)
    await verify(svc, paid, signature(), "req-paid")
    async with pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        try:
            async with conn.transaction():
                tx = await conn.fetchval(
                    """INSERT INTO ledger_transactions (kind, intent_id, purchase_signature,
                           created_by) VALUES ('purchase', $1, $2, 'intruder') RETURNING id""",
                    unpaid.id,
                    signature(),
                )
                await conn.execute(
                    """INSERT INTO ledger_entries (transaction_id, account_id, amount)
                       SELECT $1, id, CASE WHEN kind = 'user' THEN 4 ELSE -4 END
                       FROM accounts WHERE name IN ('user:alice', 'system:token_sales')""",
                    tx,
                )
        finally:
            await conn.execute("RESET session_replication_role")

    report = await triage(pool, None, "alice", now(), SLA)
    kinds = [d.kind for d in report.diagnoses]
    assert kinds == [DiagnosisKind.DUPLICATE_CREDIT, DiagnosisKind.LEDGER_WRITE_FAILED]
    assert f"credited intent {unpaid.id}" in report.primary.evidence_lines[0]
    assert "but the intent is PENDING" in report.primary.evidence_lines[0]
    # the balance trigger did not run either: the cache lags the entries
    assert "cached balance 5 is 4 below" in report.diagnoses[1].evidence_lines[0]


async def test_triage_finds_duplicate_credit_in_a_cached_balance_above_its_entries(
    pool: asyncpg.Pool,
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    intent = await create(svc, "alice", 5)
    await verify(svc, intent, signature(), "req-1")
    await pool.execute("UPDATE user_balances SET balance = balance + 7 WHERE user_id = 'alice'")
    report = await triage(pool, None, "alice", now(), SLA)
    assert report.primary.kind is DiagnosisKind.DUPLICATE_CREDIT
    assert "7 excess credits" in report.primary.summary


async def test_triage_finds_stale_pending_intent(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    svc = dataclasses.replace(build_services(pool, verifier), clock=lambda: two_hours_ago)
    intent = await create(svc, "alice")
    sig = signature()
    verifier.script[sig] = Pending(PendingReason.NOT_FOUND)
    await verify(svc, intent, sig, "req-stale")

    report = await triage(pool, None, str(intent.id), now(), SLA)
    assert [d.kind for d in report.diagnoses] == [DiagnosisKind.STALE_PENDING]
    assert report.primary.request_ids == ["req-stale"]
    assert "pending tx_not_found" in report.primary.evidence_lines[0]


async def test_triage_reads_healthy_after_credit_and_duplicate_verifies(
    pool: asyncpg.Pool,
) -> None:
    wallet = str(Keypair().pubkey())
    svc = build_services(pool, ScriptedVerifier())
    intent = await create(svc, "alice", wallet=wallet)
    sig = signature()
    for rid in ("req-1", "req-2", "req-3"):
        await verify(svc, intent, sig, rid)

    report = await triage(pool, FinalizedChain(), wallet, now(), SLA)
    assert report.subject.kind is SubjectKind.WALLET
    assert [d.kind for d in report.diagnoses] == [DiagnosisKind.HEALTHY]
    assert report.primary.request_ids == ["req-1", "req-2", "req-3"]
    assert "user alice: balance 5 = sum of entries" in report.primary.evidence_lines
    ev = report.evidence
    assert (ev.users, ev.wallets, ev.signatures, ev.intent_ids) == (
        ["alice"],
        [wallet],
        [sig],
        [intent.id],
    )


async def test_triage_reads_an_unmatched_uuid_as_a_user_id(pool: asyncpg.Pool) -> None:
    user = str(uuid.uuid4())
    svc = build_services(pool, ScriptedVerifier())
    await create(svc, user)
    report = await triage(pool, None, user, now(), SLA)
    assert report.subject.kind is SubjectKind.USER
    assert report.evidence.users == [user]
    explicit = await triage(pool, None, f"intent:{user}", now(), SLA)
    assert explicit.primary.kind is DiagnosisKind.UNKNOWN_SUBJECT


async def test_triage_of_an_unknown_signature_shows_the_chain(pool: asyncpg.Pool) -> None:
    report = await triage(pool, FinalizedChain(), signature(), now(), SLA)
    assert report.primary.kind is DiagnosisKind.UNKNOWN_SUBJECT
    assert "never presented to verify" in report.primary.evidence_lines[1]


async def test_gather_bounds_the_lookup_and_says_so(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    for _ in range(4):
        await create(svc, "alice")
    evidence = await gather(pool, classify_subject("alice"), limit=3)
    assert len(evidence.intents) == 3
    assert evidence.truncated


async def test_window_summary_tells_single_user_from_widespread(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    bad = signature()
    verifier.script[bad] = Rejected(RejectCode.UNDERPAID, "short by 1")
    alice = [await create(svc, "alice") for _ in range(2)]
    for intent in alice:
        with pytest.raises(Unprocessable):
            await verify(svc, intent, bad, "req-a")
    await verify(svc, await create(svc, "carol"), signature(), "req-ok")

    single = await triage_window(pool, "last 1h", now())
    assert single.scope is Scope.SINGLE_USER
    assert single.failures_by_code == {"underpaid": 2}
    assert single.by_outcome == {"rejected": 2, "confirmed": 1}
    assert single.top_failing_users == (("alice", 2),)
    assert single.still_pending == 2  # underpaid leaves them open for a top-up

    verifier.script[bad] = Pending(PendingReason.RPC_UNAVAILABLE, "HTTP 503")
    bob = await create(svc, "bob", wallet=str(Keypair().pubkey()))
    await verify(svc, bob, bad, "req-b")
    wide = await triage_window(pool, "", now())
    assert wide.scope is Scope.WIDESPREAD
    assert (wide.failing_users, wide.failing_wallets, wide.still_pending) == (2, 1, 3)
    assert wide.failures_by_code == {"underpaid": 2, "rpc_unavailable": 1}
    assert wide.first_failure is not None
    assert wide.last_failure is not None
    assert wide.first_failure <= wide.last_failure

    earlier = parse_window("2020-01-01T00:00Z..2020-01-02T00:00Z", now())
    quiet = await window_summary(pool, earlier)
    assert (quiet.attempts, quiet.scope) == (0, Scope.NONE)
