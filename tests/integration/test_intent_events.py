"""`GET /v1/purchase-intents/{id}/events` over HTTP, read as Server-Sent Events by an aiohttp
client: the status at once, each change as it is committed (on this replica or another), and
the stream's end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.routes_events import EVENTS
from core import db, purchases
from core.audit import Actor
from core.services import Services
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature

pytestmark = pytest.mark.timeout(60)


class SseReader:
    """Reads a text/event-stream: each event as (event name, data), comments as (":", text)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, within: float = 5.0) -> tuple[str, str] | None:
        """The next event or comment; None once the server ended the stream."""
        name, data = "message", []
        async with asyncio.timeout(within):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    return ":", line[1:].strip()
                if line == "":
                    if data:
                        return name, "\n".join(data)
                    continue
                field, _, value = line.partition(": ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)

    async def status(self, within: float = 5.0) -> dict[str, Any]:
        """The next `status` event's intent, passing keep-alive comments."""
        while True:
            got = await self.next(within)
            assert got is not None, "the stream ended"
            if got[0] == "status":
                body: dict[str, Any] = json.loads(got[1])
                return body


@asynccontextmanager
async def events(
    client: Any, intent_id: Any, user: str
) -> AsyncIterator[tuple[aiohttp.ClientResponse, SseReader]]:
    resp = await client.get(f"/v1/purchase-intents/{intent_id}/events", headers=bearer(user))
    try:
        yield resp, SseReader(resp)
    finally:
        resp.close()


def _services(pool: asyncpg.Pool, **settings: Any) -> Services:
    return build_services(pool, ScriptedVerifier(), events_keepalive_seconds=0.2, **settings)


async def _intent(svc: Services, user: str) -> purchases.Intent:
    async with svc.pool.acquire() as conn:
        return await purchases.create_intent(svc, conn, Actor(user, "api"), credits=2, wallet=None)


async def test_the_stream_sends_the_status_then_the_credit_then_ends(pool: asyncpg.Pool) -> None:
    svc = _services(pool)
    intent = await _intent(svc, "ada")
    async with api_client(svc) as client, events(client, intent.id, "ada") as (resp, sse):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await sse.status()
        got = await client.get(f"/v1/purchase-intents/{intent.id}", headers=bearer("ada"))
        assert first == await got.json()  # the intent as the API returns it
        assert first["status"] == "PENDING"
        assert await sse.next() == (":", "keep-alive")
        sig = signature()
        await purchases.verify_intent(svc, Actor("ada", "api"), intent.id, sig)
        confirmed = await sse.status()
        assert (confirmed["status"], confirmed["tx_signature"]) == ("CONFIRMED", sig)
        assert await sse.next() is None  # no longer PENDING: the stream ends


async def test_a_client_connecting_after_the_change_gets_the_final_status_at_once(
    pool: asyncpg.Pool,
) -> None:
    svc = _services(pool)
    intent = await _intent(svc, "bo")
    await purchases.verify_intent(svc, Actor("bo", "api"), intent.id, signature())
    async with api_client(svc) as client, events(client, intent.id, "bo") as (_, sse):
        assert (await sse.status(within=2))["status"] == "CONFIRMED"
        assert await sse.next(within=2) is None


async def test_a_credit_on_another_replica_reaches_the_stream_within_a_second(
    database_url: str,
) -> None:
    pool_a = await db.create_pool(database_url, min_size=1, max_size=5)
    pool_b = await db.create_pool(database_url, min_size=1, max_size=5)
    try:
        here, there = _services(pool_a), _services(pool_b)
        intent = await _intent(here, "cy")
        async with api_client(here) as client, events(client, intent.id, "cy") as (_, sse):
            assert (await sse.status())["status"] == "PENDING"
            await client.app[EVENTS].listening.wait()
            await purchases.verify_intent(there, Actor("cy", "api"), intent.id, signature())
            committed = time.monotonic()
            assert (await sse.status(within=1.0))["status"] == "CONFIRMED"
            assert time.monotonic() - committed < 1.0
    finally:
        await pool_a.close()
        await pool_b.close()


async def test_many_streams_share_one_listening_connection(pool: asyncpg.Pool) -> None:
    svc = _services(pool)
    intents = [await _intent(svc, "dee") for _ in range(5)]
    async with api_client(svc) as client:
        readers = []
        for intent in intents:
            resp = await client.get(
                f"/v1/purchase-intents/{intent.id}/events", headers=bearer("dee")
            )
            readers.append((resp, SseReader(resp)))
            assert (await readers[-1][1].status())["status"] == "PENDING"
        notifications = client.app[EVENTS]
        await notifications.listening.wait()
        assert notifications.subscribers() == 5
        listening = await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND query LIKE 'LISTEN%'"""
        )
        assert listening == 1
        await purchases.verify_intent(svc, Actor("dee", "api"), intents[2].id, signature())
        assert (await readers[2][1].status())["status"] == "CONFIRMED"
        assert await readers[2][1].next() is None
        # The others heard nothing of it: only keep-alives.
        assert await readers[0][1].next() == (":", "keep-alive")
        for resp, _ in readers:
            resp.close()


async def test_a_pending_intent_s_stream_ends_after_the_maximum(pool: asyncpg.Pool) -> None:
    svc = _services(pool, events_max_seconds=0.5)
    intent = await _intent(svc, "eve")
    async with api_client(svc) as client, events(client, intent.id, "eve") as (_, sse):
        started = time.monotonic()
        assert (await sse.status())["status"] == "PENDING"
        while (got := await sse.next(within=3)) is not None:
            assert got == (":", "keep-alive")
        assert 0.4 < time.monotonic() - started < 3


async def test_someone_elses_intent_is_404_before_any_stream(pool: asyncpg.Pool) -> None:
    svc = _services(pool)
    intent = await _intent(svc, "fred")
    async with api_client(svc) as client:
        resp = await client.get(
            f"/v1/purchase-intents/{intent.id}/events", headers=bearer("mallory")
        )
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("application/json")
        assert (await resp.json())["error"]["code"] == "intent_not_found"
        anonymous = await client.get(f"/v1/purchase-intents/{intent.id}/events")
        assert anonymous.status == 401
