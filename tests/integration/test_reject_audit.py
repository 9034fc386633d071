"""A closing rejection writes its `intent.reject` audit record only when it changed the intent."""

from __future__ import annotations

import uuid

import asyncpg

from core.audit import Actor
from core.chain.verdict import RejectCode, Rejected
from core.purchases import store as intents_db
from core.purchases.service import _reject
from core.services import Services
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature

OPS = Actor("verify", "api")
PAID_TOO_LATE = Rejected(RejectCode.EXPIRED, "paid after the intent expired and its grace")


async def _intent(svc: Services) -> uuid.UUID:
    async with api_client(svc) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 2}, headers=bearer("alice")
        )
        return uuid.UUID((await created.json())["id"])


async def _reject_records(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT before, after FROM audit_log WHERE action = 'intent.reject'")


async def test_rejection_of_a_pending_intent_is_audited_once(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    intent = await intents_db.get(pool, await _intent(svc))
    assert intent is not None
    await _reject(svc, OPS, intent, signature(), PAID_TOO_LATE)
    (record,) = await _reject_records(pool)
    assert record["before"] == {"status": "PENDING"}
    assert record["after"]["status"] == "REJECTED"
    # The same stale view rejected again: nothing changes, nothing is recorded.
    await _reject(svc, OPS, intent, signature(), PAID_TOO_LATE)
    assert len(await _reject_records(pool)) == 1
    assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == 2


async def test_the_record_names_the_status_the_intent_really_had(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    intent_id = await _intent(svc)
    stale = await intents_db.get(pool, intent_id)
    assert stale is not None
    await pool.execute("UPDATE purchase_intents SET status = 'EXPIRED' WHERE id = $1", intent_id)
    await _reject(svc, OPS, stale, signature(), PAID_TOO_LATE)
    (record,) = await _reject_records(pool)
    assert record["before"] == {"status": "EXPIRED"}
