"""Rate limits on the public routes: per address, per user; 429 with Retry-After."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.services import Services
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


def _one_request_per_address(pool: asyncpg.Pool, trusted_proxies: str = "") -> Services:
    return build_services(
        pool,
        ScriptedVerifier(),
        rate_limit_per_ip_per_second=0.5,
        rate_limit_per_ip_burst=1,
        trusted_proxies=trusted_proxies,
    )


async def _statuses(client: TestClient[Any, Any], *forwarded_for: str) -> list[int]:
    return [
        (await client.get("/v1/status", headers={"X-Forwarded-For": f} if f else None)).status
        for f in forwarded_for
    ]


async def test_forwarded_for_is_ignored_without_trusted_proxies(pool: asyncpg.Pool) -> None:
    async with api_client(_one_request_per_address(pool)) as client:
        # Each request claims another address; all come from one peer, one bucket.
        assert await _statuses(client, "203.0.113.7", "203.0.113.8", "") == [200, 429, 429]


async def test_a_client_cannot_choose_its_bucket_behind_a_trusted_proxy(
    pool: asyncpg.Pool,
) -> None:
    # The test client connects from 127.0.0.1: it plays the load balancer, which appends the
    # address it saw (the real client) to whatever the client sent.
    async with api_client(_one_request_per_address(pool, "127.0.0.0/8")) as client:
        assert await _statuses(
            client,
            "198.51.100.1",
            "203.0.113.7, 198.51.100.1",  # the same client, pretending to be another
            "10.9.9.9, 198.51.100.1",
            "198.51.100.2",  # another client
        ) == [200, 429, 429, 200]


async def test_forwarded_for_walks_back_through_every_trusted_proxy(pool: asyncpg.Pool) -> None:
    trusted = "127.0.0.0/8, 10.0.0.0/8"
    async with api_client(_one_request_per_address(pool, trusted)) as client:
        assert await _statuses(
            client,
            "spoofed, 198.51.100.1, 10.0.0.5",  # client -> proxy 10.0.0.5 -> the balancer
            "1.1.1.1, 198.51.100.1, 10.0.0.6",
            "198.51.100.3, 10.0.0.5",
        ) == [200, 429, 200]


async def test_a_malformed_forwarded_hop_falls_back_to_the_nearest_trusted_address(
    pool: asyncpg.Pool,
) -> None:
    async with api_client(_one_request_per_address(pool, "127.0.0.0/8, 10.0.0.0/8")) as client:
        assert await _statuses(client, "not-an-address, 10.0.0.5", "other, 10.0.0.5") == [
            200,
            429,
        ]
