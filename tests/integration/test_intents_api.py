"""Creating and reading intents; the gate; status, health, metrics and OpenAPI routes."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import pytest

from core import gate
from core.audit import Actor
from core.chain.verdict import Pending, PendingReason, RejectCode, Rejected
from core.gate import SwitchName
from core.logs import ContextFilter, JsonFormatter
from tests.support import (
    JWT_SECRET,
    MINT,
    TREASURY,
    ScriptedVerifier,
    api_client,
    bearer,
    build_services,
    signature,
)

OPS = Actor("U_ONCALL", "slack")


async def test_create_intent_prices_from_config_and_builds_solana_pay_url(
    pool: asyncpg.Pool,
) -> None:
    svc = build_services(pool, ScriptedVerifier(), price_per_credit=1_500_000, token_decimals=6)
    async with api_client(svc) as client:
        resp = await client.post(
            "/v1/purchase-intents",
            json={"credits": 3},
            headers={**bearer("alice"), "X-Request-Id": "req-42"},
        )
        assert resp.status == 201
        assert resp.headers["X-Request-Id"] == "req-42"
        body = await resp.json()
    assert body["status"] == "PENDING"
    assert body["amount"] == "4500000"
    assert (body["mint"], body["recipient"]) == (MINT, TREASURY)
    assert body["memo"] == body["id"]
    url = urlparse(body["solana_pay_url"])
    assert url.scheme == "solana"
    assert url.path == TREASURY
    query = parse_qs(url.query)
    assert query == {
        "amount": ["4.5"],
        "spl-token": [MINT],
        "reference": [body["reference"]],
        "label": ["payops"],
        "message": ["3 credits"],
        "memo": [body["id"]],
    }
    created, expires = (
        datetime.fromisoformat(body["created_at"]),
        datetime.fromisoformat(body["expires_at"]),
    )
    assert (expires - created).total_seconds() == 900
    row = await pool.fetchrow("SELECT actor, source, action, request_id FROM audit_log")
    assert dict(row) == {
        "actor": "alice",
        "source": "api",
        "action": "intent.create",
        "request_id": "req-42",
    }


async def test_each_intent_gets_a_fresh_reference(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        refs = set()
        for _ in range(5):
            resp = await client.post(
                "/v1/purchase-intents", json={"credits": 1}, headers=bearer("alice")
            )
            refs.add((await resp.json())["reference"])
    assert len(refs) == 5


async def test_idempotency_key_replays_the_same_intent(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        headers = {**bearer("alice"), "Idempotency-Key": "checkout-1"}
        first = await client.post("/v1/purchase-intents", json={"credits": 2}, headers=headers)
        second = await client.post("/v1/purchase-intents", json={"credits": 2}, headers=headers)
        assert first.status == second.status == 201
        assert await first.json() == await second.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        different = await client.post("/v1/purchase-intents", json={"credits": 3}, headers=headers)
        assert different.status == 422
        assert (await different.json())["error"]["code"] == "idempotency_key_reused"
        # Keys are per user: bob's "checkout-1" is his own.
        bob = await client.post(
            "/v1/purchase-intents",
            json={"credits": 3},
            headers={**bearer("bob"), "Idempotency-Key": "checkout-1"},
        )
        assert bob.status == 201
    assert await pool.fetchval("SELECT count(*) FROM purchase_intents") == 2


async def test_concurrent_requests_with_one_key_create_one_intent(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        headers = {**bearer("alice"), "Idempotency-Key": "race"}

        async def create() -> Any:
            resp = await client.post("/v1/purchase-intents", json={"credits": 4}, headers=headers)
            assert resp.status == 201
            return await resp.json()

        bodies = await asyncio.gather(*(create() for _ in range(50)))
    assert len({b["id"] for b in bodies}) == 1
    assert await pool.fetchval("SELECT count(*) FROM purchase_intents") == 1


async def test_closed_verify_gate_answers_503_and_changes_nothing(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    async with api_client(build_services(pool, verifier)) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 2}, headers=bearer("alice")
        )
        intent = await created.json()
        async with pool.acquire() as conn:
            await gate.set_switch(
                conn, SwitchName.VERIFY, is_open=False, reason="dup credits", actor=OPS
            )
        before = await pool.fetchval("SELECT count(*) FROM verification_attempts")
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": signature()},
            headers=bearer("alice"),
        )
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "verify_paused"
        assert int(resp.headers["Retry-After"]) > 0
        assert verifier.calls == 0
        assert await pool.fetchval("SELECT count(*) FROM verification_attempts") == before
        assert await pool.fetchval("SELECT status FROM purchase_intents") == "PENDING"
        status = await (await client.get("/v1/status")).json()
        assert status["verify"]["open"] is False
        assert status["verify"]["reason"] == "dup credits"
        assert status["retry_verification"] is False

        async with pool.acquire() as conn:
            await gate.set_switch(
                conn, SwitchName.VERIFY, is_open=True, reason="smoke passed", actor=OPS
            )
        ok = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": signature()},
            headers=bearer("alice"),
        )
        assert ok.status == 200
    actions = [
        r["action"]
        for r in await pool.fetch("SELECT action FROM audit_log WHERE subject='gate:verify'")
    ]
    assert actions == ["gate.verify.close", "gate.verify.open"]


async def test_client_retries_switch_shows_on_status(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        async with pool.acquire() as conn:
            await gate.set_switch(
                conn, SwitchName.CLIENT_RETRIES, is_open=False, reason="rpc down", actor=OPS
            )
        status = await (await client.get("/v1/status")).json()
    assert status["client_retries"]["open"] is False
    assert status["verify"]["open"] is True
    assert status["retry_verification"] is False


async def test_gate_change_reaches_a_cached_reader_within_a_second(pool: asyncpg.Pool) -> None:
    reader = gate.GateReader(pool, ttl=0.5)
    assert (await reader.state()).verify.is_open
    async with pool.acquire() as conn:
        await gate.set_switch(conn, SwitchName.VERIFY, is_open=False, reason="x", actor=OPS)
    await asyncio.sleep(0.6)
    assert not (await reader.state()).verify.is_open


async def test_pending_verdict_answers_202_and_keeps_the_intent_pending(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    sig = signature()
    verifier.script[sig] = Pending(PendingReason.NOT_FINAL, "confirmed, not finalized")
    async with api_client(build_services(pool, verifier)) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 2}, headers=bearer("alice")
        )
        intent = await created.json()
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": sig},
            headers=bearer("alice"),
        )
        assert resp.status == 202
        body = await resp.json()
        assert (body["status"], body["reason"]) == ("PENDING", "tx_not_final")
        assert resp.headers["Retry-After"] == str(body["retry_after"])
    assert await pool.fetchval("SELECT status FROM purchase_intents") == "PENDING"
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
    assert await pool.fetchval("SELECT outcome FROM verification_attempts") == "pending"


async def test_rejected_verdict_answers_422_with_its_code(pool: asyncpg.Pool) -> None:
    verifier = ScriptedVerifier()
    wrong, short = signature(), signature()
    verifier.script[wrong] = Rejected(RejectCode.WRONG_MINT, "paid with another token")
    verifier.script[short] = Rejected(RejectCode.UNDERPAID, "received 5 of 10")
    async with api_client(build_services(pool, verifier)) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 2}, headers=bearer("alice")
        )
        url = f"/v1/purchase-intents/{(await created.json())['id']}/verify"
        resp = await client.post(url, json={"signature": wrong}, headers=bearer("alice"))
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "wrong_mint"
        # A wrong transaction leaves the intent open for the right one ...
        assert await pool.fetchval("SELECT status FROM purchase_intents") == "PENDING"
        resp = await client.post(url, json={"signature": short}, headers=bearer("alice"))
        assert (await resp.json())["error"]["code"] == "underpaid"
        # ... and so does an underpayment: anyone can send dust carrying the intent's public
        # reference, and a top-up may still complete the price.
        assert await pool.fetchval("SELECT status FROM purchase_intents") == "PENDING"
        after = await client.post(url, json={"signature": signature()}, headers=bearer("alice"))
        assert after.status == 200
        assert (await after.json())["status"] == "CONFIRMED"
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    codes = [
        r["code"] for r in await pool.fetch("SELECT code FROM verification_attempts ORDER BY id")
    ]
    assert codes == ["wrong_mint", "underpaid", None]


async def test_health_readiness_metrics_and_openapi(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["checks"] == {
            "database": "ok",
            "treasury_watcher": "not started",
        }
        for _ in range(2):
            await client.post("/v1/purchase-intents", json={"credits": 1}, headers=bearer("alice"))
        # A method a client invents is counted, under one label value: it mints no series.
        assert (await client.request("PROPFIND", "/v1/purchase-intents")).status == 405
        metrics = await (await client.get("/metrics")).text()
        assert (
            'payops_http_requests_total{method="POST",route="purchase-intents",status="201"} 2.0'
            in metrics
        )
        assert 'method="OTHER",route="unmatched",status="405"} 1.0' in metrics
        assert "PROPFIND" not in metrics
        assert 'payops_http_request_seconds_count{route="purchase-intents"} 2.0' in metrics
        assert "payops_intents_created_total 2.0" in metrics
        assert 'payops_gate_open{switch="verify"} 1.0' in metrics
        doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/v1/purchase-intents",
        "/v1/purchase-intents/{intent_id}",
        "/v1/purchase-intents/{intent_id}/verify",
        "/v1/purchase-intents/{intent_id}/events",
        "/v1/credits",
        "/v1/credits/debits",
        "/v1/status",
        "/v1/ops/{command}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    for ref in ("CreateIntentRequest", "IntentBody", "VerifyPendingBody", "ErrorBody"):
        assert ref in doc["components"]["schemas"]


async def test_readyz_reports_an_unhealthy_chain(pool: asyncpg.Pool) -> None:
    async def down() -> bool:
        raise ConnectionError("rpc down")

    svc = build_services(pool, ScriptedVerifier())
    from dataclasses import replace

    async with api_client(replace(svc, chain_health=down)) as client:
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["solana_rpc"].startswith("unavailable")


async def test_route_logs_carry_request_id_route_user_and_intent(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO, logger="payops.http")
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        created = await client.post(
            "/v1/purchase-intents",
            json={"credits": 1},
            headers={**bearer("alice"), "X-Request-Id": "r-1"},
        )
        intent = await created.json()
        await client.get("/v1/credits", headers={**bearer("alice"), "X-Request-Id": "r-2"})
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "payops.http"
    ]
    create = next(line for line in lines if line.get("request_id") == "r-1")
    assert (create["route"], create["user"], create["intent_id"], create["status"]) == (
        "purchase-intents",
        "alice",
        intent["id"],
        201,
    )
    credits = next(line for line in lines if line.get("request_id") == "r-2")
    assert credits["route"] == "credits"
    assert JWT_SECRET not in caplog.text
    assert "Bearer" not in caplog.text
