"""Acceptance: concurrent and duplicate verifies credit exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from core import ledger
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature


async def _create(client: Any, user: str, credits: int = 5) -> dict[str, Any]:
    resp = await client.post(
        "/v1/purchase-intents", json={"credits": credits}, headers=bearer(user)
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def _verify_at_once(
    client: Any, intent: dict[str, Any], sig: str, n: int
) -> list[tuple[int, dict[str, Any]]]:
    async def verify() -> tuple[int, dict[str, Any]]:
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": sig},
            headers=bearer("alice"),
        )
        return resp.status, await resp.json()

    return list(await asyncio.gather(*(verify() for _ in range(n))))


async def test_200_concurrent_verifies_of_one_intent_credit_exactly_once(
    pool: asyncpg.Pool,
) -> None:
    verifier = ScriptedVerifier(delay=0.01)
    svc = build_services(pool, verifier)
    async with api_client(svc) as client:
        intent = await _create(client, "alice", credits=7)
        results = await _verify_at_once(client, intent, signature(), 200)

    assert {status for status, _ in results} == {200}
    assert sum(1 for _, body in results if not body["already_credited"]) == 1
    assert {body["balance"] for _, body in results} == {7}
    assert await ledger.balance(pool, "alice") == 7
    assert (
        await pool.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind='purchase'") == 1
    )
    assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == 200
    health = await ledger.health(pool)
    assert health.ok, health


async def _outcomes(pool: asyncpg.Pool) -> dict[tuple[str, bool], int]:
    """Attempts by (outcome, whether they went through a credit: its detail says what the
    chain showed)."""
    rows = await pool.fetch(
        """SELECT outcome, detail LIKE 'received %' AS sent, count(*) AS n
           FROM verification_attempts GROUP BY 1, 2"""
    )
    return {(r["outcome"], r["sent"]): r["n"] for r in rows}


async def test_verifies_of_one_pair_together_send_one_credit_and_the_rest_are_duplicates(
    pool: asyncpg.Pool,
) -> None:
    """All get the chain's answer at once; the first sends the credit, the others wait for
    it and are answered as duplicates without a transaction of their own."""
    svc = build_services(pool, ScriptedVerifier(delay=0.01))
    async with api_client(svc) as client:
        intent = await _create(client, "alice", credits=7)
        results = await _verify_at_once(client, intent, signature(), 50)

    assert {status for status, _ in results} == {200}
    assert sorted(body["already_credited"] for _, body in results) == [False] + [True] * 49
    assert {body["balance"] for _, body in results} == {7}
    assert await _outcomes(pool) == {("confirmed", True): 1, ("duplicate", False): 49}
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    assert (await ledger.health(pool)).ok


# Fails the first ledger entry inserted (not a unique violation: a credit that fails).
FAIL_FIRST_ENTRY = """
CREATE SEQUENCE test_fail;
CREATE FUNCTION test_fail_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('test_fail') = 1 THEN
        RAISE EXCEPTION 'the first credit fails' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_fail_entry BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION test_fail_entry();
"""


async def test_when_the_first_credit_of_a_pair_fails_the_others_send_their_own(
    pool: asyncpg.Pool,
) -> None:
    """One caller's error is never another's answer: those that waited for the failed credit
    each send theirs, and exactly one of them credits."""
    await pool.execute(FAIL_FIRST_ENTRY)
    svc = build_services(pool, ScriptedVerifier(delay=0.01))
    async with api_client(svc) as client:
        intent = await _create(client, "alice", credits=7)
        results = await _verify_at_once(client, intent, signature(), 20)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [500]
    credited = [body for status, body in results if status == 200]
    assert sorted(body["already_credited"] for body in credited) == [False] + [True] * 18
    assert await _outcomes(pool) == {
        ("credit_failed", True): 1,
        ("confirmed", True): 1,
        ("duplicate", True): 18,  # each sent its own credit and found the pair credited
    }
    assert await ledger.balance(pool, "alice") == 7
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    assert (await ledger.health(pool)).ok


async def test_signature_used_by_one_intent_is_refused_for_another(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    async with api_client(svc) as client:
        first = await _create(client, "alice")
        second = await _create(client, "bob")
        sig = signature()
        ok = await client.post(
            f"/v1/purchase-intents/{first['id']}/verify",
            json={"signature": sig},
            headers=bearer("alice"),
        )
        assert ok.status == 200
        clash = await client.post(
            f"/v1/purchase-intents/{second['id']}/verify",
            json={"signature": sig},
            headers=bearer("bob"),
        )
        assert clash.status == 409
        assert (await clash.json())["error"]["code"] == "signature_already_used"
        again = await client.get(f"/v1/purchase-intents/{second['id']}", headers=bearer("bob"))
        assert (await again.json())["status"] == "PENDING"
    assert await ledger.balance(pool, "bob") == 0
    assert await ledger.balance(pool, "alice") == 5
    assert (await ledger.health(pool)).ok


async def test_same_signature_raced_across_many_intents_credits_one(pool: asyncpg.Pool) -> None:
    # The pre-check cannot see an in-flight credit; the unique constraint must decide.
    svc = build_services(pool, ScriptedVerifier(delay=0.02))
    async with api_client(svc) as client:
        users = [f"user{i}" for i in range(20)]
        intents = [await _create(client, u) for u in users]
        sig = signature()

        async def verify(user: str, intent: dict[str, Any]) -> int:
            resp = await client.post(
                f"/v1/purchase-intents/{intent['id']}/verify",
                json={"signature": sig},
                headers=bearer(user),
            )
            return resp.status

        statuses = await asyncio.gather(
            *(verify(u, i) for u, i in zip(users, intents, strict=True))
        )
    assert sorted(statuses) == [200] + [409] * 19
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    assert (
        await pool.fetchval("SELECT count(*) FROM purchase_intents WHERE status='CONFIRMED'") == 1
    )
    assert (await ledger.health(pool)).ok


async def test_confirmed_intent_refuses_a_different_signature(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    async with api_client(svc) as client:
        intent = await _create(client, "alice")
        url = f"/v1/purchase-intents/{intent['id']}/verify"
        assert (
            await client.post(url, json={"signature": signature()}, headers=bearer("alice"))
        ).status == 200
        other = await client.post(url, json={"signature": signature()}, headers=bearer("alice"))
        assert other.status == 409
        assert (await other.json())["error"]["code"] == "intent_already_confirmed"
    assert await ledger.balance(pool, "alice") == 5


async def test_duplicate_verify_after_credit_does_not_ask_the_chain(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    async with api_client(svc) as client:
        intent = await _create(client, "alice")
        sig = signature()
        url = f"/v1/purchase-intents/{intent['id']}/verify"
        for _ in range(5):
            resp = await client.post(url, json={"signature": sig}, headers=bearer("alice"))
            assert resp.status == 200
    assert verifier.calls == 1


@pytest.mark.parametrize("credits", [1, 3, 1000])
async def test_credit_matches_intent_and_balance_equals_entries(
    pool: asyncpg.Pool, credits: int
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    async with api_client(svc) as client:
        intent = await _create(client, "carol", credits=credits)
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": signature()},
            headers=bearer("carol"),
        )
        body = await resp.json()
        assert body["credited"] == credits
        assert body["balance"] == credits
        credits_resp = await client.get("/v1/credits", headers=bearer("carol"))
        listed = await credits_resp.json()
    assert listed["balance"] == credits
    assert [e["amount"] for e in listed["entries"]] == [credits]
    assert (await ledger.health(pool)).ok
