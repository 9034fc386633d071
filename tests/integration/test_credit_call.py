"""The credit as one call (`payops_credit_purchase`): what it writes for each state the locked
intent can be in, and that a refusal writes nothing."""

from __future__ import annotations

import uuid
from dataclasses import replace

import asyncpg
import pytest

from core import ledger
from core.audit import Actor
from core.chain.verdict import Confirmed
from core.errors import Conflict, NotFound
from core.ledger import LedgerKind, Posting
from core.purchases import Intent, IntentStatus, credit_in
from core.purchases import store as intents_db

ALICE = Actor(id="alice", source="api", request_id="req-1")
PAID = Confirmed(received=50_000, payer="payer-1", slot=7, block_time=None)


async def _intent(pool: asyncpg.Pool, status: str = "PENDING", **columns: object) -> Intent:
    intent_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
               recipient, recipient_token_account, reference, memo, created_at, expires_at)
           VALUES ($1, 'alice', 5, 50000, 'm', 'p', 'r', 'ta', $2, $3, now(),
                   now() + interval '15 min')""",
        intent_id,
        str(uuid.uuid4()),
        str(intent_id),
    )
    intent = await intents_db.get(pool, intent_id)
    assert intent is not None
    if status != "PENDING" or columns:
        sets = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(columns))
        await pool.execute(
            f"UPDATE purchase_intents SET status = $2{', ' + sets if sets else ''} WHERE id = $1",
            intent_id,
            status,
            *columns.values(),
        )
    return intent  # as read before: PENDING, like a verify's read before the chain


async def _written(pool: asyncpg.Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM ledger_transactions) AS tx,
                  (SELECT count(*) FROM verification_attempts) AS attempts,
                  (SELECT count(*) FROM audit_log WHERE action = 'intent.confirm') AS audits"""
    )
    assert row is not None
    return row["tx"], row["attempts"], row["audits"]


async def test_a_pending_intent_is_credited_confirmed_attempted_and_audited(
    pool: asyncpg.Pool,
) -> None:
    intent = await _intent(pool)
    after, balance, duplicate = await credit_in(pool, ALICE, intent, "sig-1", PAID)

    assert (after.status, after.tx_signature, after.received_amount) == (
        IntentStatus.CONFIRMED,
        "sig-1",
        50_000,
    )
    assert after.confirmed_at is not None
    assert (balance, duplicate) == (5, False)
    assert await ledger.balance(pool, "alice") == 5
    assert await _written(pool) == (1, 1, 1)
    attempt = await pool.fetchrow("SELECT outcome, code, detail, source FROM verification_attempts")
    assert dict(attempt) == {
        "outcome": "confirmed",
        "code": None,
        "detail": "received 50000 at slot 7",
        "source": "api",
    }
    audit = await pool.fetchrow(
        "SELECT actor, source, subject, before, after, request_id FROM audit_log "
        "WHERE action = 'intent.confirm'"
    )
    assert (audit["actor"], audit["source"], audit["request_id"]) == ("alice", "api", "req-1")
    assert audit["subject"] == f"intent:{intent.id}"
    assert audit["before"] == {"status": "PENDING"}
    assert audit["after"]["tx_signature"] == "sig-1"
    assert audit["after"]["received_amount"] == "50000"
    assert (await ledger.health(pool)).ok


async def test_a_repeat_of_the_confirming_signature_records_a_duplicate_and_nothing_else(
    pool: asyncpg.Pool,
) -> None:
    intent = await _intent(pool)
    await credit_in(pool, ALICE, intent, "sig-1", PAID)
    # the caller's read is stale (PENDING): the locked row decides
    after, balance, duplicate = await credit_in(pool, ALICE, intent, "sig-1", PAID)

    assert (after.status, after.received_amount, balance, duplicate) == (
        IntentStatus.CONFIRMED,
        50_000,
        5,
        True,
    )
    assert await _written(pool) == (1, 2, 1)
    outcomes = await pool.fetch("SELECT outcome FROM verification_attempts ORDER BY id")
    assert [r["outcome"] for r in outcomes] == ["confirmed", "duplicate"]
    assert await ledger.balance(pool, "alice") == 5


@pytest.mark.parametrize(
    ("status", "columns", "code"),
    [
        ("REJECTED", {"reject_code": "expired"}, "intent_rejected"),
        (
            "CONFIRMED",
            {"tx_signature": "sig-other", "confirmed_at": None},
            "intent_already_confirmed",
        ),
    ],
)
async def test_an_intent_settled_otherwise_under_the_lock_is_refused_and_nothing_is_written(
    pool: asyncpg.Pool, status: str, columns: dict[str, object], code: str
) -> None:
    if "confirmed_at" in columns:
        columns = {**columns, "confirmed_at": await pool.fetchval("SELECT now()")}
    intent = await _intent(pool, status, **columns)
    before = await _written(pool)

    with pytest.raises(Conflict) as refused:
        await credit_in(pool, ALICE, intent, "sig-1", PAID)

    assert refused.value.code == code
    assert await _written(pool) == before
    assert await ledger.balance(pool, "alice") == 0
    assert (await intents_db.get(pool, intent.id)).status.value == status  # type: ignore[union-attr]


async def test_an_expired_intent_is_credited_and_its_audit_says_it_was_expired(
    pool: asyncpg.Pool,
) -> None:
    intent = await _intent(pool, "EXPIRED")
    after, balance, duplicate = await credit_in(pool, ALICE, intent, "sig-1", PAID)
    assert (after.status, balance, duplicate) == (IntentStatus.CONFIRMED, 5, False)
    before = await pool.fetchval("SELECT before FROM audit_log WHERE action = 'intent.confirm'")
    assert before == {"status": "EXPIRED"}


async def test_an_unknown_intent_is_not_found_and_nothing_is_written(pool: asyncpg.Pool) -> None:
    intent = await _intent(pool)
    with pytest.raises(NotFound):
        await credit_in(pool, ALICE, replace(intent, id=uuid.uuid4()), "sig-1", PAID)
    assert await _written(pool) == (0, 0, 0)


async def test_a_posting_to_a_missing_system_account_raises_and_writes_nothing(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(LookupError, match="system account system:nowhere is missing"):
            async with conn.transaction():
                await ledger.post(
                    conn,
                    kind=LedgerKind.ADJUSTMENT,
                    postings=[Posting("user:carol", 3), Posting("system:nowhere", -3)],
                    created_by="t",
                )
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 0
    assert await pool.fetchval("SELECT count(*) FROM accounts WHERE name = 'user:carol'") == 0


async def test_a_first_posting_creates_the_users_account(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await ledger.post(
            conn,
            kind=LedgerKind.ADJUSTMENT,
            postings=[Posting("user:dave", 4), Posting("system:adjustments", -4)],
            created_by="t",
        )
    assert await pool.fetchval("SELECT user_id FROM accounts WHERE name = 'user:dave'") == "dave"
    assert await ledger.balance(pool, "dave") == 4
    assert (await ledger.health(pool)).ok
