"""Adjustments against the real database: applied once, atomically, audited, reversible."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core import adjustments, ledger
from core.adjustments import (
    AdjustmentKind,
    AdjustmentPolicy,
    AdjustmentStatus,
    DecisionKind,
    DecisionResult,
    Resolution,
    new_request,
)
from core.audit import Actor
from core.errors import Conflict, Forbidden, NotFound, PayopsError, Unprocessable
from core.ledger import LedgerKind, adjustment_postings, debit_postings, purchase_postings
from tests.support import signature

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = AdjustmentPolicy(
    managers=frozenset({"M1", "M2", "M3"}), two_approvals_above=100, ttl=timedelta(hours=1)
)
ONCALL = Actor("OC1", "slack")
M1, M2 = Actor("M1", "slack"), Actor("M2", "slack")
APPROVE, REJECT = DecisionKind.APPROVE, DecisionKind.REJECT


async def _request(pool: asyncpg.Pool, credits: int = 50, user: str = "alice") -> int:
    request = new_request(
        user_id=user, credits=credits, reason="tx landed, credit missing", policy=POLICY, now=NOW
    )
    async with pool.acquire() as conn:
        return (await adjustments.create(conn, ONCALL, request)).id


async def _decide(
    pool: asyncpg.Pool, actor: Actor, adj_id: int, decision: DecisionKind = APPROVE
) -> DecisionResult:
    async with pool.acquire() as conn:
        return await adjustments.decide(conn, actor, adj_id, decision, POLICY, NOW)


async def _intent(conn: asyncpg.Connection, user: str, credits: int) -> uuid.UUID:
    intent_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
               recipient, recipient_token_account, reference, memo, created_at, expires_at)
           VALUES ($1, $2, $3, 50000, 'm', 'p', 'r', 'ta', $4, $5, now(),
                   now() + interval '15 min')""",
        intent_id,
        user,
        credits,
        str(uuid.uuid4()),
        str(intent_id),
    )
    return intent_id


async def _purchase(pool: asyncpg.Pool, user: str = "alice", credits: int = 40) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await ledger.post(
            conn,
            kind=LedgerKind.PURCHASE,
            postings=purchase_postings(user, credits),
            created_by="verify",
            intent_id=await _intent(conn, user, credits),
            purchase_signature=signature(),
        )


async def _audit_actions(pool: asyncpg.Pool, adj_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id", f"adjustment:{adj_id}"
    )
    return [r["action"] for r in rows]


async def test_approval_applies_ledger_transaction_and_audit_together(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool, credits=50)
    assert await ledger.balance(pool, "alice") == 0
    result = await _decide(pool, M1, adj_id)
    assert result.resolution is Resolution.APPLY
    assert result.adjustment.status is AdjustmentStatus.APPLIED
    assert result.adjustment.applied_ledger_tx == result.ledger_tx
    assert result.adjustment.decided_at == NOW
    assert result.balance == 50
    assert await ledger.balance(pool, "alice") == 50
    tx = await pool.fetchrow(
        """SELECT kind, idempotency_key, idempotency_scope, idempotency_principal,
                  idempotency_value, created_by
           FROM ledger_transactions WHERE id = $1""",
        result.ledger_tx,
    )
    assert tx is not None
    assert dict(tx) == {
        "kind": "adjustment",
        "idempotency_key": None,
        "idempotency_scope": "adjustment",
        "idempotency_principal": "",
        "idempotency_value": str(adj_id),
        "created_by": "M1",
    }
    assert await _audit_actions(pool, adj_id) == [
        "adjustment.request",
        "adjustment.decision",
        "adjustment.apply",
    ]
    note = await pool.fetchrow(
        "SELECT actor, source, before, after FROM audit_log WHERE action = 'adjustment.apply'"
    )
    assert note is not None
    assert (note["actor"], note["source"]) == ("M1", "slack")
    assert note["before"] == {"status": "PENDING_APPROVAL", "balance": 0}
    assert note["after"]["reason"] == "tx landed, credit missing"
    assert note["after"]["ledger_tx"] == result.ledger_tx
    assert note["after"]["approvers"] == ["M1"]
    assert (await ledger.health(pool)).ok


async def test_failed_apply_leaves_nothing_behind(pool: asyncpg.Pool) -> None:
    original = await _purchase(pool, credits=40)
    async with pool.acquire() as conn:
        adj = await adjustments.reverse_request(
            conn, ONCALL, original, "verified twice", policy=POLICY, now=NOW
        )
        # something else reverses the transaction meanwhile: the apply must fail whole
        async with conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.REVERSAL,
                postings=adjustment_postings("alice", -40),
                created_by="t",
                reverses_id=original,
            )
    with pytest.raises(Conflict) as caught:
        await _decide(pool, M1, adj.id)
    assert caught.value.code == "already_reversed"
    after = await adjustments.get(pool, adj.id)
    assert after is not None
    assert after.status is AdjustmentStatus.PENDING_APPROVAL
    assert await adjustments.decisions(pool, adj.id) == []
    assert await _audit_actions(pool, adj.id) == ["adjustment.request"]
    assert await ledger.balance(pool, "alice") == 0
    assert (await ledger.health(pool)).ok


async def test_large_adjustment_needs_two_managers(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool, credits=500)
    first = await _decide(pool, M1, adj_id)
    assert first.resolution is Resolution.WAITING
    assert (first.approvers, first.approvals_required) == (("M1",), 2)
    assert await ledger.balance(pool, "alice") == 0
    with pytest.raises(Conflict) as again:
        await _decide(pool, M1, adj_id)
    assert again.value.code == "already_decided"
    second = await _decide(pool, M2, adj_id)
    assert second.resolution is Resolution.APPLY
    assert second.approvers == ("M1", "M2")
    assert await ledger.balance(pool, "alice") == 500


async def test_double_decide_applies_once(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool)
    await _decide(pool, M1, adj_id)
    for actor, code in [(M1, "adjustment_not_pending"), (M2, "adjustment_not_pending")]:
        with pytest.raises(Conflict) as caught:
            await _decide(pool, actor, adj_id)
        assert caught.value.code == code
    assert await ledger.balance(pool, "alice") == 50
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1


@pytest.mark.parametrize(("credits", "waiting"), [(50, 0), (500, 1)])
async def test_concurrent_approvals_by_two_managers_apply_once(
    pool: asyncpg.Pool, credits: int, waiting: int
) -> None:
    adj_id = await _request(pool, credits=credits)
    results = await asyncio.gather(
        *(_decide(pool, M1 if i % 2 else M2, adj_id) for i in range(10)), return_exceptions=True
    )
    done = [r for r in results if isinstance(r, DecisionResult)]
    refused = [r for r in results if not isinstance(r, DecisionResult)]
    assert [r.resolution for r in done].count(Resolution.APPLY) == 1
    assert [r.resolution for r in done].count(Resolution.WAITING) == waiting
    assert all(isinstance(e, Conflict) for e in refused), refused
    codes = {e.code for e in refused if isinstance(e, Conflict)}
    assert codes <= {"already_decided", "adjustment_not_pending"}
    assert await ledger.balance(pool, "alice") == credits
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    assert await pool.fetchval("SELECT count(*) FROM adjustment_decisions") == 1 + waiting
    assert (await _audit_actions(pool, adj_id)).count("adjustment.apply") == 1
    assert (await ledger.health(pool)).ok


async def test_reject_moves_no_credits(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool, credits=500)
    await _decide(pool, M1, adj_id)
    result = await _decide(pool, M2, adj_id, REJECT)
    assert result.resolution is Resolution.REJECT
    assert result.adjustment.status is AdjustmentStatus.REJECTED
    assert result.ledger_tx is None
    with pytest.raises(Conflict):
        await _decide(pool, Actor("M3", "slack"), adj_id)
    assert await ledger.balance(pool, "alice") == 0
    assert (await _audit_actions(pool, adj_id))[-1] == "adjustment.reject"


async def test_requester_and_non_managers_cannot_decide(pool: asyncpg.Pool) -> None:
    request = new_request(user_id="alice", credits=5, reason="r", policy=POLICY, now=NOW)
    async with pool.acquire() as conn:
        adj = await adjustments.create(conn, M1, request)
    with pytest.raises(Forbidden) as own:
        await _decide(pool, M1, adj.id)
    assert own.value.code == "self_approval"
    with pytest.raises(Forbidden) as outsider:
        await _decide(pool, ONCALL, adj.id)
    assert outsider.value.code == "not_a_manager"
    assert await adjustments.decisions(pool, adj.id) == []


async def test_database_refuses_what_the_rules_refuse(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool, credits=500)
    with pytest.raises(asyncpg.CheckViolationError, match="requester"):
        await pool.execute(
            "INSERT INTO adjustment_decisions (adjustment_id, approver, decision) VALUES ($1, 'OC1', 'approve')",
            adj_id,
        )
    async with pool.acquire() as conn, conn.transaction():
        tx = await ledger.post(
            conn,
            kind=LedgerKind.ADJUSTMENT,
            postings=adjustment_postings("bob", 500),
            created_by="t",
        )
        # the status guard fires at the UPDATE: no approvals are recorded
        with pytest.raises(asyncpg.CheckViolationError, match="approvals"):
            await conn.execute(
                "UPDATE adjustments SET status = 'APPLIED', applied_ledger_tx = $2, decided_at = now() WHERE id = $1",
                adj_id,
                tx,
            )
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("UPDATE adjustments SET credits = 5000 WHERE id = $1", adj_id)
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM adjustments WHERE id = $1", adj_id)
    await _decide(pool, M1, adj_id)
    await _decide(pool, M2, adj_id)
    with pytest.raises(asyncpg.RestrictViolationError, match="already APPLIED"):
        await pool.execute("UPDATE adjustments SET status = 'REJECTED' WHERE id = $1", adj_id)
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM adjustment_decisions")
    with pytest.raises(asyncpg.CheckViolationError, match="not pending"):
        await pool.execute(
            "INSERT INTO adjustment_decisions (adjustment_id, approver, decision) VALUES ($1, 'M3', 'approve')",
            adj_id,
        )


async def test_expired_request_cannot_be_approved(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool)
    async with pool.acquire() as conn:
        with pytest.raises(Conflict) as caught:
            await adjustments.decide(
                conn, M1, adj_id, APPROVE, POLICY, NOW + POLICY.ttl + timedelta(seconds=1)
            )
    assert caught.value.code == "adjustment_expired"
    adj = await adjustments.get(pool, adj_id)
    assert adj is not None
    assert adj.status is AdjustmentStatus.EXPIRED
    with pytest.raises(Conflict) as again:
        await _decide(pool, M2, adj_id)
    assert again.value.code == "adjustment_not_pending"
    assert await ledger.balance(pool, "alice") == 0
    assert await _audit_actions(pool, adj_id) == ["adjustment.request", "adjustment.expire"]


async def test_expire_due_marks_only_overdue_requests(pool: asyncpg.Pool) -> None:
    old = await _request(pool)
    fresh_request = new_request(
        user_id="bob", credits=5, reason="r", policy=POLICY, now=NOW + timedelta(minutes=50)
    )
    async with pool.acquire() as conn:
        fresh = await adjustments.create(conn, ONCALL, fresh_request)
        expired = await adjustments.expire_due(conn, NOW + timedelta(minutes=61))
        assert [a.id for a in expired] == [old]
        assert expired[0].status is AdjustmentStatus.EXPIRED
        assert await adjustments.expire_due(conn, NOW + timedelta(minutes=61)) == []
    assert [a.id for a in await adjustments.list_pending(pool)] == [fresh.id]
    row = await pool.fetchrow(
        "SELECT actor, source FROM audit_log WHERE action = 'adjustment.expire'"
    )
    assert row is not None
    assert (row["actor"], row["source"]) == ("scheduler", "scheduler")
    with pytest.raises(Conflict):
        await _decide(pool, M1, old)


async def test_reversal_of_a_duplicate_purchase_credit(pool: asyncpg.Pool) -> None:
    await _purchase(pool, credits=40)
    duplicate = await _purchase(pool, credits=40)
    async with pool.acquire() as conn:
        adj = await adjustments.reverse_request(
            conn, ONCALL, duplicate, "verified twice", policy=POLICY, now=NOW
        )
        assert adj.credits == -40
        assert adj.kind is AdjustmentKind.DUPLICATE_REVERSAL
        assert adj.reverses_ledger_tx == duplicate
        assert len(adj.refs.tx_signatures) == len(adj.refs.intent_ids) == 1
        assert await adjustments.current_warnings(conn, adj) == []
        with pytest.raises(Conflict) as pending:
            await adjustments.reverse_request(
                conn, ONCALL, duplicate, "again", policy=POLICY, now=NOW
            )
        assert pending.value.code == "reversal_pending"
    result = await _decide(pool, M1, adj.id)
    assert result.balance == 40
    reversal = await pool.fetchrow(
        """SELECT kind, reverses_id, idempotency_scope, idempotency_value
           FROM ledger_transactions WHERE id = $1""",
        result.ledger_tx,
    )
    assert reversal is not None
    assert dict(reversal) == {
        "kind": "reversal",
        "reverses_id": duplicate,
        "idempotency_scope": "adjustment",
        "idempotency_value": str(adj.id),
    }
    async with pool.acquire() as conn:
        with pytest.raises(Conflict) as done:
            await adjustments.reverse_request(
                conn, ONCALL, duplicate, "again", policy=POLICY, now=NOW
            )
    assert done.value.code == "already_reversed"
    assert await ledger.balance(pool, "alice") == 40
    assert (await ledger.health(pool)).ok


async def test_rejected_reversal_may_be_requested_again(pool: asyncpg.Pool) -> None:
    tx = await _purchase(pool, credits=40)
    async with pool.acquire() as conn:
        first = await adjustments.reverse_request(conn, ONCALL, tx, "dup?", policy=POLICY, now=NOW)
    await _decide(pool, M1, first.id, REJECT)
    async with pool.acquire() as conn:
        second = await adjustments.reverse_request(conn, ONCALL, tx, "dup!", policy=POLICY, now=NOW)
    assert (await _decide(pool, M2, second.id)).resolution is Resolution.APPLY
    async with pool.acquire() as conn:
        with pytest.raises(Conflict) as caught:
            await adjustments.reverse_request(conn, ONCALL, tx, "x", policy=POLICY, now=NOW)
    assert caught.value.code == "already_reversed"


async def test_reversal_refuses_debits_reversals_and_unknown_transactions(
    pool: asyncpg.Pool,
) -> None:
    credit = await _purchase(pool, credits=40)
    async with pool.acquire() as conn:
        async with conn.transaction():
            spent = await ledger.post(
                conn, kind=LedgerKind.DEBIT, postings=debit_postings("alice", 10), created_by="shop"
            )
            reversed_ = await ledger.post(
                conn,
                kind=LedgerKind.REVERSAL,
                postings=adjustment_postings("alice", -40),
                created_by="t",
                reverses_id=credit,
            )
        cases: list[tuple[int, type[PayopsError], str]] = [
            (spent, Unprocessable, "not_reversible"),
            (reversed_, Unprocessable, "not_reversible"),
            (credit, Conflict, "already_reversed"),
            (10_000, NotFound, "ledger_tx_not_found"),
        ]
        for tx, error, code in cases:
            with pytest.raises(error) as caught:
                await adjustments.reverse_request(conn, ONCALL, tx, "r", policy=POLICY, now=NOW)
            assert caught.value.code == code, tx
    assert await pool.fetchval("SELECT count(*) FROM adjustments") == 0


async def test_reversal_that_goes_negative_is_flagged_and_applies_when_approved(
    pool: asyncpg.Pool,
) -> None:
    duplicate = await _purchase(pool, credits=40)
    async with pool.acquire() as conn, conn.transaction():
        # the duplicate credits were spent before anyone noticed
        await ledger.post(
            conn, kind=LedgerKind.DEBIT, postings=debit_postings("alice", 30), created_by="shop"
        )
    async with pool.acquire() as conn:
        adj = await adjustments.reverse_request(
            conn, ONCALL, duplicate, "verified twice", policy=POLICY, now=NOW
        )
        flagged = await adjustments.current_warnings(conn, adj)
    assert len(flagged) == 1
    assert "from 10 to -30" in flagged[0]
    result = await _decide(pool, M1, adj.id)
    assert result.resolution is Resolution.APPLY
    assert result.balance == -30
    assert await ledger.balance(pool, "alice") == -30
    assert (await ledger.health(pool)).ok


async def test_thread_link_and_pending_list(pool: asyncpg.Pool) -> None:
    adj_id = await _request(pool)
    await adjustments.set_thread(pool, adj_id, "C123", "1700000000.000100")
    adj = await adjustments.get(pool, adj_id)
    assert adj is not None
    assert (adj.slack_channel, adj.slack_thread_ts) == ("C123", "1700000000.000100")
    assert [a.id for a in await adjustments.list_pending(pool)] == [adj_id]
    await _decide(pool, M1, adj_id)
    assert await adjustments.list_pending(pool) == []
    # the bot may still update the thread of a decided request
    await adjustments.set_thread(pool, adj_id, "C123", "1700000000.000200")
    with pytest.raises(NotFound):
        await adjustments.set_thread(pool, 999, "C", "1")
    with pytest.raises(NotFound):
        await _decide(pool, M1, 999)


async def test_a_service_named_adjustment_cannot_take_an_adjustments_key(
    pool: asyncpg.Pool,
) -> None:
    """A debit by service `adjustment` with key `<id>` used to be stored as `adjustment:<id>`,
    the key of adjustment <id>, which then could never be applied."""
    await _purchase(pool, user="bob", credits=10)
    adj_id = await _request(pool, credits=50)
    async with pool.acquire() as conn:
        await ledger.debit(
            conn, Actor("adjustment", "api"), user_id="bob", credits=1, reason="", key=str(adj_id)
        )
    result = await _decide(pool, M1, adj_id)
    assert result.adjustment.status is AdjustmentStatus.APPLIED
    assert await ledger.balance(pool, "alice") == 50
    assert (await ledger.health(pool)).ok


async def test_rows_with_the_old_text_key_stay_valid_beside_new_ones(pool: asyncpg.Pool) -> None:
    """Rows written before migration 0010 (or by the previous release) keep their text key."""
    await _purchase(pool, user="bob", credits=10)
    adj_id = await _request(pool, credits=5)
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchval(
            """INSERT INTO ledger_transactions (kind, idempotency_key, created_by)
               VALUES ('debit', $1, 'svc') RETURNING id""",
            f"adjustment:{adj_id}",
        )
        await conn.execute(
            """INSERT INTO ledger_entries (transaction_id, account_id, amount)
               SELECT $1, id, CASE name WHEN 'user:bob' THEN -1 ELSE 1 END FROM accounts
               WHERE name IN ('user:bob', 'system:spend')""",
            old,
        )
    result = await _decide(pool, M1, adj_id)
    assert result.adjustment.status is AdjustmentStatus.APPLIED
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """INSERT INTO ledger_transactions (kind, idempotency_key, idempotency_scope,
                       idempotency_principal, idempotency_value, created_by)
                   VALUES ('debit', 'x', 'debit', 'svc', 'x', 'svc')"""
            )
    assert (await ledger.health(pool)).ok
