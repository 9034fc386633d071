"""Debits by internal services: never below zero, applied once per idempotency key."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from core import ledger
from core.audit import Actor
from core.errors import Conflict
from core.ledger import LedgerKind, adjustment_postings
from tests.support import ScriptedVerifier, api_client, bearer, build_services, service_bearer


async def _fund(pool: asyncpg.Pool, user: str, credits: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await ledger.post(
            conn,
            kind=LedgerKind.ADJUSTMENT,
            postings=adjustment_postings(user, credits),
            created_by="t",
        )


def _debit_headers(key: str, service: str = "shop") -> dict[str, str]:
    return {**service_bearer(service), "Idempotency-Key": key}


async def test_debit_that_would_go_negative_is_refused(pool: asyncpg.Pool) -> None:
    await _fund(pool, "alice", 5)
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        resp = await client.post(
            "/v1/credits/debits",
            json={"user_id": "alice", "credits": 6},
            headers=_debit_headers("k1"),
        )
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "insufficient_credits"
        # The failure stored nothing: the same key may be used again once it can succeed.
        ok = await client.post(
            "/v1/credits/debits",
            json={"user_id": "alice", "credits": 5},
            headers=_debit_headers("k2"),
        )
        assert ok.status == 201
        assert (await ok.json())["balance"] == 0
    assert await ledger.balance(pool, "alice") == 0
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind='debit'") == 1


async def test_debit_of_unknown_user_is_refused(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        resp = await client.post(
            "/v1/credits/debits",
            json={"user_id": "nobody", "credits": 1},
            headers=_debit_headers("k"),
        )
        assert resp.status == 422
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0


async def test_repeated_debit_with_same_key_applies_once(pool: asyncpg.Pool) -> None:
    await _fund(pool, "alice", 10)
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        bodies = []
        for _ in range(3):
            resp = await client.post(
                "/v1/credits/debits",
                json={"user_id": "alice", "credits": 4, "reason": "render"},
                headers=_debit_headers("order-1"),
            )
            assert resp.status == 201
            bodies.append(await resp.json())
        assert bodies[0] == bodies[1] == bodies[2]
        assert bodies[0]["balance"] == 6
        reused = await client.post(
            "/v1/credits/debits",
            json={"user_id": "alice", "credits": 5},
            headers=_debit_headers("order-1"),
        )
        assert reused.status == 422
        assert (await reused.json())["error"]["code"] == "idempotency_key_reused"
    assert await ledger.balance(pool, "alice") == 6


async def test_concurrent_debits_never_overdraw(pool: asyncpg.Pool) -> None:
    await _fund(pool, "alice", 10)
    async with api_client(build_services(pool, ScriptedVerifier())) as client:

        async def spend(i: int) -> int:
            resp = await client.post(
                "/v1/credits/debits",
                json={"user_id": "alice", "credits": 3},
                headers=_debit_headers(f"k{i}"),
            )
            return resp.status

        statuses = await asyncio.gather(*(spend(i) for i in range(20)))
    assert statuses.count(201) == 3
    assert statuses.count(422) == 17
    assert await ledger.balance(pool, "alice") == 1
    assert (await ledger.health(pool)).ok


async def test_concurrent_same_key_debits_apply_once(pool: asyncpg.Pool) -> None:
    await _fund(pool, "alice", 10)
    async with api_client(build_services(pool, ScriptedVerifier())) as client:

        async def spend() -> tuple[int, Any]:
            resp = await client.post(
                "/v1/credits/debits",
                json={"user_id": "alice", "credits": 2},
                headers=_debit_headers("same"),
            )
            return resp.status, await resp.json()

        results = await asyncio.gather(*(spend() for _ in range(30)))
    assert {s for s, _ in results} == {201}
    assert len({b["transaction_id"] for _, b in results}) == 1
    assert await ledger.balance(pool, "alice") == 8


async def test_debit_needs_the_service_scope_and_a_key(pool: asyncpg.Pool) -> None:
    await _fund(pool, "alice", 10)
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        user_token = await client.post(
            "/v1/credits/debits",
            json={"user_id": "alice", "credits": 1},
            headers={**bearer("alice"), "Idempotency-Key": "k"},
        )
        assert user_token.status == 403
        assert (await user_token.json())["error"]["code"] == "insufficient_scope"
        no_key = await client.post(
            "/v1/credits/debits", json={"user_id": "alice", "credits": 1}, headers=service_bearer()
        )
        assert no_key.status == 400
        assert (await no_key.json())["error"]["code"] == "idempotency_key_required"
    assert await ledger.balance(pool, "alice") == 10


async def test_debit_writes_an_audit_record(pool: asyncpg.Pool) -> None:
    await _fund(pool, "alice", 10)
    from core import ledger as debits

    async with pool.acquire() as conn:
        await debits.debit(
            conn, Actor("shop", "api"), user_id="alice", credits=2, reason="x", key="k"
        )
    row = await pool.fetchrow(
        "SELECT actor, action, subject, after FROM audit_log WHERE action='ledger.debit'"
    )
    assert row is not None
    assert (row["actor"], row["subject"], row["after"]["balance"]) == ("shop", "user:alice", 8)


async def test_debit_keys_of_different_services_never_collide(pool: asyncpg.Pool) -> None:
    """`svc:a` with key `b` and `svc` with key `a:b` are two debits (once a 500)."""
    await _fund(pool, "alice", 10)
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        statuses = []
        for service, key in (("svc:a", "b"), ("svc", "a:b"), ("svc:a:b", "")):
            resp = await client.post(
                "/v1/credits/debits",
                json={"user_id": "alice", "credits": 1},
                headers=_debit_headers(key or "k", service),
            )
            statuses.append(resp.status)
    assert statuses == [201, 201, 201]
    assert await ledger.balance(pool, "alice") == 7
    rows = await pool.fetch(
        """SELECT idempotency_scope, idempotency_principal, idempotency_value, idempotency_key
           FROM ledger_transactions WHERE kind = 'debit' ORDER BY id"""
    )
    assert [tuple(r) for r in rows] == [
        ("debit", "svc:a", "b", None),
        ("debit", "svc", "a:b", None),
        ("debit", "svc:a:b", "k", None),
    ]


async def test_a_debit_key_taken_outside_the_api_is_a_conflict_not_a_500(
    pool: asyncpg.Pool,
) -> None:
    await _fund(pool, "alice", 10)
    actor = Actor("shop", "api")
    async with pool.acquire() as conn:
        await ledger.debit(conn, actor, user_id="alice", credits=1, reason="", key="k")
        with pytest.raises(Conflict) as again:
            await ledger.debit(conn, actor, user_id="alice", credits=1, reason="", key="k")
    assert again.value.code == "idempotency_key_used"
    assert await ledger.balance(pool, "alice") == 9
