"""Rate limits on the public routes: per address, per user; 429 with Retry-After."""

from __future__ import annotations

import asyncpg

from tests.support import ScriptedVerifier, api_client, bearer, build_services


async def test_per_user_limit_answers_429_and_spares_other_users(pool: asyncpg.Pool) -> None:
    svc = build_services(
        pool, ScriptedVerifier(), rate_limit_per_user_per_second=0.5, rate_limit_per_user_burst=3
    )
    async with api_client(svc) as client:
        statuses = [
            (await client.get("/v1/credits", headers=bearer("greedy"))).status for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]
        limited = await client.get("/v1/credits", headers=bearer("greedy"))
        assert (await limited.json())["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await client.get("/v1/credits", headers=bearer("polite"))).status == 200


async def test_per_address_limit_covers_unauthenticated_requests(pool: asyncpg.Pool) -> None:
    svc = build_services(
        pool, ScriptedVerifier(), rate_limit_per_ip_per_second=0.5, rate_limit_per_ip_burst=2
    )
    async with api_client(svc) as client:
        statuses = [(await client.get("/v1/status")).status for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        # Health and metrics stay reachable for the load balancer and Prometheus.
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 200
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_forwarded_for_is_used_only_when_trusted(pool: asyncpg.Pool) -> None:
    svc = build_services(
        pool,
        ScriptedVerifier(),
        rate_limit_per_ip_per_second=0.5,
        rate_limit_per_ip_burst=1,
        trust_forwarded_for=True,
    )
    async with api_client(svc) as client:
        first = await client.get("/v1/status", headers={"X-Forwarded-For": "203.0.113.7"})
        second = await client.get(
            "/v1/status", headers={"X-Forwarded-For": "203.0.113.8, 10.0.0.1"}
        )
        third = await client.get("/v1/status", headers={"X-Forwarded-For": "203.0.113.7"})
        assert (first.status, second.status, third.status) == (200, 200, 429)
