"""Repeated verifies of a credited (intent, signature) pair: answered from the process's
settled pairs, each still recorded, with the balance as the database has it now."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from core import gate, ledger
from core.audit import Actor
from core.gate import SwitchName
from core.purchases import store as intents_db
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature

OPS = Actor(id="U_OPS", source="cli")


async def _credited(client: Any, user: str, sig: str, credits: int = 4) -> str:
    created = await client.post(
        "/v1/purchase-intents", json={"credits": credits}, headers=bearer(user)
    )
    intent_id = str((await created.json())["id"])
    resp = await client.post(
        f"/v1/purchase-intents/{intent_id}/verify", json={"signature": sig}, headers=bearer(user)
    )
    assert resp.status == 200, await resp.text()
    return intent_id


async def test_a_credited_pair_is_answered_from_the_settled_pairs(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    sig = signature()
    async with api_client(svc) as client:
        intent_id = await _credited(client, "alice", sig)
        assert svc.settled.get(uuid.UUID(intent_id), sig) is not None
        # Another credit moves the balance: the duplicate answers today's balance.
        await _credited(client, "alice", signature(), credits=3)
        url = f"/v1/purchase-intents/{intent_id}/verify"
        again = await client.post(url, json={"signature": sig}, headers=bearer("alice"))
        assert again.status == 200
        body = await again.json()
        assert body["already_credited"] is True
        assert body["credited"] == 4
        assert body["balance"] == 7
        # Only its owner hears about it.
        other = await client.post(url, json={"signature": sig}, headers=bearer("bob"))
        assert other.status == 404
        # The gate still applies.
        async with pool.acquire() as conn:
            await gate.set_switch(conn, SwitchName.VERIFY, is_open=False, reason="t", actor=OPS)
        paused = await client.post(url, json={"signature": sig}, headers=bearer("alice"))
        assert paused.status == 503
    assert verifier.calls == 2
    assert await ledger.balance(pool, "alice") == 7
    rows = await pool.fetch(
        "SELECT outcome, detail FROM verification_attempts WHERE intent_id = $1 ORDER BY id",
        uuid.UUID(intent_id),
    )
    assert [r["outcome"] for r in rows] == ["confirmed", "duplicate"]
    assert rows[1]["detail"] == "already credited"


async def test_a_pair_credited_elsewhere_is_learnt_from_the_database(pool: asyncpg.Pool) -> None:
    """A replica that did not credit the pair reads it once, then answers from memory."""
    sig = signature()
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        intent_id = await _credited(client, "alice", sig)
    verifier = ScriptedVerifier()
    other = build_services(pool, verifier)  # another process: nothing known
    assert other.settled.get(uuid.UUID(intent_id), sig) is None
    async with api_client(other) as client:
        url = f"/v1/purchase-intents/{intent_id}/verify"
        for _ in range(3):
            resp = await client.post(url, json={"signature": sig}, headers=bearer("alice"))
            assert resp.status == 200
            assert (await resp.json())["already_credited"] is True
    assert verifier.calls == 0
    assert other.settled.get(uuid.UUID(intent_id), sig) is not None


async def test_a_duplicate_attempt_commits_asynchronously_for_its_transaction_only(
    pool: asyncpg.Pool,
) -> None:
    sig = signature()
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        intent_id = await _credited(client, "alice", sig)
    intent = await intents_db.get(pool, uuid.UUID(intent_id))
    assert intent is not None
    attempt = intents_db.Attempt(sig, "api", "duplicate", None, "already credited", None)
    async with pool.acquire() as conn:
        setting = await conn.fetchval("SHOW synchronous_commit")
        assert await intents_db.record_duplicates(conn, [(intent, attempt)]) == {"alice": 4}
        assert await conn.fetchval("SHOW synchronous_commit") == setting
    assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == 2
