"""Duplicates' attempt rows written in batches: every duplicate gets its own user's balance
and its own row; a batch the database refuses fails all of its duplicates, writes none of
them, and the next batch is written as usual."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import pytest

from core.purchases import DuplicateAttempts, Intent
from core.purchases import store as intents_db
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature


async def _credited(pool: asyncpg.Pool, user: str, credits: int) -> tuple[Intent, str]:
    sig = signature()
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": credits}, headers=bearer(user)
        )
        intent_id = (await created.json())["id"]
        resp = await client.post(
            f"/v1/purchase-intents/{intent_id}/verify",
            json={"signature": sig},
            headers=bearer(user),
        )
        assert resp.status == 200, await resp.text()
    intent = await intents_db.get(pool, uuid.UUID(intent_id))
    assert intent is not None
    return intent, sig


def _attempt(sig: str, request_id: str, outcome: str = "duplicate") -> intents_db.Attempt:
    return intents_db.Attempt(sig, "api", outcome, None, "already credited", request_id)


async def test_concurrent_duplicates_share_statements_and_each_gets_its_users_balance(
    pool: asyncpg.Pool,
) -> None:
    alice, alice_sig = await _credited(pool, "alice", 3)
    bob, bob_sig = await _credited(pool, "bob", 8)
    before = await pool.fetchval("SELECT count(*) FROM verification_attempts")
    writer = DuplicateAttempts()

    answers = await asyncio.gather(
        *(
            writer.record(pool, alice, _attempt(alice_sig, f"a{i}"))
            if i % 2
            else writer.record(pool, bob, _attempt(bob_sig, f"b{i}"))
            for i in range(60)
        )
    )

    assert answers == [3 if i % 2 else 8 for i in range(60)]
    assert writer.rows == 60
    assert 1 <= writer.batches < 60
    rows = await pool.fetch(
        "SELECT intent_id, user_id, outcome, request_id FROM verification_attempts "
        "WHERE request_id IS NOT NULL AND outcome = 'duplicate'"
    )
    assert len(rows) == 60
    assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == before + 60
    for r in rows:
        expected = (alice.id, "alice") if r["request_id"].startswith("a") else (bob.id, "bob")
        assert (r["intent_id"], r["user_id"]) == expected


async def test_a_refused_batch_fails_each_of_its_duplicates_and_writes_none(
    pool: asyncpg.Pool,
) -> None:
    alice, sig = await _credited(pool, "alice", 3)
    before = await pool.fetchval("SELECT count(*) FROM verification_attempts")
    writer = DuplicateAttempts()
    ghost = replace(alice, id=uuid.uuid4())  # no such intent: the foreign key refuses it

    results = await asyncio.gather(
        writer.record(pool, alice, _attempt(sig, "first")),
        writer.record(pool, ghost, _attempt(sig, "ghost")),
        writer.record(pool, alice, _attempt(sig, "third")),
        return_exceptions=True,
    )

    assert all(isinstance(r, asyncpg.ForeignKeyViolationError) for r in results), results
    assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == before
    # the next duplicate starts a batch of its own, written as usual
    assert await writer.record(pool, alice, _attempt(sig, "after")) == 3
    assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == before + 1


async def test_a_lone_duplicate_is_written_at_once(pool: asyncpg.Pool) -> None:
    alice, sig = await _credited(pool, "alice", 2)
    writer = DuplicateAttempts()
    assert await asyncio.wait_for(writer.record(pool, alice, _attempt(sig, "one")), 5) == 2
    assert (writer.batches, writer.rows) == (1, 1)


async def test_a_cancelled_duplicate_does_not_stop_the_others(pool: asyncpg.Pool) -> None:
    alice, sig = await _credited(pool, "alice", 4)
    writer = DuplicateAttempts()
    first = asyncio.ensure_future(writer.record(pool, alice, _attempt(sig, "gone")))
    second = asyncio.ensure_future(writer.record(pool, alice, _attempt(sig, "kept")))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 4
    with pytest.raises(asyncio.CancelledError):
        await first
    kept = await pool.fetchval(
        "SELECT count(*) FROM verification_attempts WHERE request_id = 'kept'"
    )
    assert kept == 1
