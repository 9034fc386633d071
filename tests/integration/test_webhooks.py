"""Webhooks from the outbox to a local receiver over HTTP: every event of a change, signed,
delivered at least once, in order per subject, retried while the receiver is down, given
up after the retry period, and delivered again with the same ids on replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from core import ledger, purchases, webhooks
from core.audit import Actor
from core.services import Services
from tests.support import ScriptedVerifier, build_services, signature

pytestmark = pytest.mark.timeout(60)
SECRET = "whsec-tests-0123456789abcdef"


@dataclass
class Receiver:
    """A webhook receiver on loopback that checks every signature it gets."""

    url: str = ""
    up: bool = True
    got: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.up:
            return web.Response(status=503)
        header = request.headers.get(webhooks.SIGNATURE_HEADER, "")
        if not webhooks.verify(header, body, SECRET.encode(), datetime.now(UTC)):
            self.bad_signatures += 1
            return web.Response(status=400)
        event = json.loads(body)
        assert request.headers[webhooks.EVENT_ID_HEADER] == event["id"]
        self.got.append(event)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.url = f"http://127.0.0.1:{port}/hooks"
    yield rx
    await runner.cleanup()


async def _services(pool: asyncpg.Pool, rx: Receiver, **overrides: Any) -> Services:
    svc = build_services(
        pool,
        ScriptedVerifier(),
        webhook_url=rx.url,
        webhook_secret=SECRET,
        webhook_backoff_base_seconds=0.05,
        webhook_backoff_cap_seconds=0.2,
        **overrides,
    )
    async with pool.acquire() as conn:
        await webhooks.sync_endpoints(conn, svc.settings.webhook_url)
    return svc


async def _buy(svc: Services, user: str, credits: int) -> Any:
    actor = Actor(user, "api")
    async with svc.pool.acquire() as conn:
        intent = await purchases.create_intent(svc, conn, actor, credits=credits, wallet=None)
    await purchases.verify_intent(svc, actor, intent.id, signature())
    return intent


async def _round(svc: Services) -> webhooks.DeliveryReport:
    """One round of deliveries, with a sender of its own."""
    sender = webhooks.sender_for(svc)
    assert sender is not None
    try:
        return await webhooks.deliver(svc, sender)
    finally:
        await sender.close()


async def _drain(svc: Services, rounds: int = 20) -> None:
    sender = webhooks.sender_for(svc)
    assert sender is not None
    try:
        for _ in range(rounds):
            if await webhooks.depth(svc.pool) == 0:
                return
            await webhooks.deliver(svc, sender)
            await asyncio.sleep(0.06)
    finally:
        await sender.close()


async def test_a_credit_and_a_debit_are_delivered_signed(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    svc = await _services(pool, receiver)
    intent = await _buy(svc, "uma", 5)
    async with pool.acquire() as conn:
        await ledger.debit(
            conn, Actor("shop", "api"), user_id="uma", credits=2, reason="a hat", key="k1"
        )

    await _drain(svc)

    assert receiver.bad_signatures == 0
    assert [e["type"] for e in receiver.got] == ["intent.confirmed", "credits.debited"]
    confirmed, debited = receiver.got
    assert confirmed["data"]["intent_id"] == str(intent.id)
    assert confirmed["data"]["credits"] == 5
    assert debited["data"] == {
        "user_id": "uma",
        "credits": 2,
        "balance": 3,
        "ledger_transaction_id": debited["data"]["ledger_transaction_id"],
        "reason": "a hat",
    }


async def test_no_event_without_its_change(pool: asyncpg.Pool, receiver: Receiver) -> None:
    svc = await _services(pool, receiver)
    async with pool.acquire() as conn:
        with pytest.raises(Exception, match="smaller than the debit"):
            await ledger.debit(
                conn, Actor("shop", "api"), user_id="nobody", credits=1, reason="", key="k"
            )
        intent = await purchases.create_intent(
            svc, conn, Actor("vic", "api"), credits=1, wallet=None
        )

        async def expire_then_fail() -> None:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE purchase_intents SET status = 'EXPIRED' WHERE id = $1", intent.id
                )
                await conn.execute("SELECT 1/0")  # the change rolls back, and its event

        with pytest.raises(asyncpg.DivisionByZeroError):
            await expire_then_fail()
    assert await pool.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_receiver_down_gets_everything_afterwards_in_order(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    svc = await _services(pool, receiver)
    receiver.up = False
    intents = [await _buy(svc, "wes", 1) for _ in range(3)]
    async with pool.acquire() as conn:
        for n in range(3):
            await ledger.debit(
                conn, Actor("shop", "api"), user_id="wes", credits=1, reason="", key=f"k{n}"
            )
    down = await _round(svc)
    # One head per subject was tried: each intent's event, and the user's first debit.
    assert down.failed == 4
    assert receiver.got == []

    receiver.up = True
    await _drain(svc)

    types = [e["type"] for e in receiver.got]
    assert sorted(types) == ["credits.debited"] * 3 + ["intent.confirmed"] * 3
    balances = [e["data"]["balance"] for e in receiver.got if e["type"] == "credits.debited"]
    assert balances == [2, 1, 0], "one subject's events arrive in the order they happened"
    assert {e["data"]["intent_id"] for e in receiver.got if e["type"] == "intent.confirmed"} == {
        str(i.id) for i in intents
    }
    assert receiver.bad_signatures == 0


async def _backlog(svc: Services, events: int) -> None:
    """`events` events of distinct subjects in the outbox at once (a burst of credits)."""
    async with svc.pool.acquire() as conn, conn.transaction():
        for n in range(events):
            await webhooks.enqueue(conn, "intent.confirmed", f"intent:{n}", {"n": n})


async def test_a_backlog_drains_in_one_round_while_the_receiver_takes_every_batch(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    svc = await _services(pool, receiver)
    await _backlog(svc, 2 * webhooks.BATCH + 50)
    report = await _round(svc)
    assert (report.delivered, report.failed) == (2 * webhooks.BATCH + 50, 0)
    assert sorted(e["data"]["n"] for e in receiver.got) == list(range(2 * webhooks.BATCH + 50))
    assert await webhooks.depth(pool) == 0


async def test_a_receiver_failing_a_batch_gets_no_more_in_that_round(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    svc = await _services(pool, receiver)
    await _backlog(svc, 2 * webhooks.BATCH + 50)
    receiver.up = False
    report = await _round(svc)
    assert (report.delivered, report.failed) == (0, webhooks.BATCH)  # one batch, not three
    assert await webhooks.depth(pool) == 2 * webhooks.BATCH + 50


async def test_replay_delivers_the_same_event_ids_again(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    svc = await _services(pool, receiver)
    await _buy(svc, "xena", 2)
    await _drain(svc)
    first = [e["id"] for e in receiver.got]

    async with pool.acquire() as conn:
        replayed = await webhooks.replay(conn, datetime.now(UTC) - timedelta(hours=1))
    await _drain(svc)

    assert replayed == 1
    assert [e["id"] for e in receiver.got] == first + first


async def test_an_event_undeliverable_past_the_retry_period_is_dead_until_retried(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    svc = await _services(pool, receiver, webhook_retry_seconds=60)
    receiver.up = False
    await _buy(svc, "yuri", 1)
    # The event was written a day ago: its retry period is over.
    await pool.execute("UPDATE webhook_events SET created_at = now() - interval '1 day'")
    report = await _round(svc)
    assert len(report.dead) == 1
    dead = await webhooks.deliveries(pool, status="dead")
    assert [d.event.type for d in dead] == ["intent.confirmed"]

    receiver.up = True
    async with pool.acquire() as conn:
        assert await webhooks.retry(conn, dead[0].event.id) == 1
    await _drain(svc)
    assert [e["id"] for e in receiver.got] == [str(dead[0].event.id)]
