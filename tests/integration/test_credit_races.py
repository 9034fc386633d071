"""Unique violations in a credit: only the credit's own constraints (one purchase per
signature, one per intent) mean "this payment is already used"; any other is a race of two
first postings for one new user, retried, or, if it persists, a failed credit — never a 409
that would tell the payer their payment went to someone else."""

from __future__ import annotations

import asyncio

import asyncpg

from core import ledger
from core.purchases import CREDIT_UNIQUE_CONSTRAINTS
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature

# Raises a unique violation named after a constraint the credit does not own, on the first
# `fail_times` entries inserted (an account row created by a concurrent first posting).
RACING_ENTRY = """
CREATE SEQUENCE test_race;  -- nextval survives the rollback of the failing credit
CREATE FUNCTION test_race_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('test_race') <= {fail_times} THEN
        RAISE EXCEPTION 'duplicate key value violates unique constraint'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'accounts_user_id_key';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_race_entry BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION test_race_entry();
"""


async def test_the_credit_constraints_are_the_ones_the_code_names(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        """SELECT c.conname, array_agg(a.attname::text) AS columns
           FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.conrelid = 'ledger_transactions'::regclass AND c.contype = 'u'
           GROUP BY c.conname"""
    )
    by_name = {r["conname"]: r["columns"] for r in rows}
    assert {name: by_name.get(name) for name in CREDIT_UNIQUE_CONSTRAINTS} == {
        "ledger_transactions_purchase_signature_key": ["purchase_signature"],
        "ledger_transactions_intent_id_key": ["intent_id"],
    }


async def _verify_new_intent(pool: asyncpg.Pool, user: str) -> tuple[int, dict[str, object]]:
    svc = build_services(pool, ScriptedVerifier())
    async with api_client(svc) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 4}, headers=bearer(user)
        )
        intent = await created.json()
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": signature()},
            headers=bearer(user),
        )
        return resp.status, await resp.json()


async def test_a_unique_race_outside_the_credit_is_retried_and_credits_once(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(RACING_ENTRY.format(fail_times=1))
    status, body = await _verify_new_intent(pool, "erin")
    assert (status, body["already_credited"], body["balance"]) == (200, False, 4)
    # the first try met the race, the retry wrote both entries
    assert await pool.fetchval("SELECT last_value FROM test_race") == 3
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    outcomes = await pool.fetch("SELECT outcome FROM verification_attempts")
    assert [r["outcome"] for r in outcomes] == ["confirmed"]
    assert (await ledger.health(pool)).ok


async def test_a_unique_violation_that_persists_is_a_failed_credit_not_a_409(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(RACING_ENTRY.format(fail_times=1000))
    status, body = await _verify_new_intent(pool, "erin")
    assert status == 500, body
    assert body["error"]["code"] != "signature_already_used"
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 0
    assert await pool.fetchval("SELECT status FROM purchase_intents") == "PENDING"
    attempt = await pool.fetchrow("SELECT outcome, code, detail FROM verification_attempts")
    assert attempt is not None
    assert (attempt["outcome"], attempt["code"]) == ("credit_failed", "ledger_write_failed")
    assert "accounts_user_id_key" in attempt["detail"] or "UniqueViolation" in attempt["detail"]


async def test_a_new_users_first_purchases_verified_at_once_all_credit(
    pool: asyncpg.Pool,
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    async with api_client(svc) as client:
        intents = [
            await (
                await client.post(
                    "/v1/purchase-intents", json={"credits": 3}, headers=bearer("finn")
                )
            ).json()
            for _ in range(12)
        ]
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/v1/purchase-intents/{i['id']}/verify",
                    json={"signature": signature()},
                    headers=bearer("finn"),
                )
                for i in intents
            )
        )
        assert [a.status for a in answers] == [200] * 12
    assert await ledger.balance(pool, "finn") == 36
    assert await pool.fetchval("SELECT count(*) FROM accounts WHERE user_id = 'finn'") == 1
    assert (await ledger.health(pool)).ok
