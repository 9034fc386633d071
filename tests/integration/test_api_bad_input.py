"""Bad input on every route: a 4xx with a stable code, and nothing written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import pytest

from tests.support import (
    JWT_SECRET,
    ScriptedVerifier,
    api_client,
    bearer,
    build_services,
    service_bearer,
    signature,
)

TABLES = [
    "purchase_intents",
    "verification_attempts",
    "ledger_transactions",
    "ledger_entries",
    "user_balances",
    "audit_log",
    "idempotency_keys",
    "accounts",
]


async def _counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


def _token(claims: dict[str, Any], key: str = JWT_SECRET, alg: str = "HS256") -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm=alg)}


NOW = datetime.now(UTC)
BAD_AUTH = [
    ("missing", {}, "missing_token"),
    ("not bearer", {"Authorization": "Basic abc"}, "invalid_token"),
    ("garbage", {"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    (
        "wrong secret",
        _token({"sub": "alice", "exp": NOW + timedelta(hours=1)}, key="x" * 32),
        "invalid_token",
    ),
    ("expired", _token({"sub": "alice", "exp": NOW - timedelta(hours=1)}), "token_expired"),
    ("no exp", _token({"sub": "alice"}), "invalid_token"),
    ("no sub", _token({"exp": NOW + timedelta(hours=1)}), "invalid_token"),
    ("numeric sub", _token({"sub": 42, "exp": NOW + timedelta(hours=1)}), "invalid_token"),
    (
        "alg none",
        {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "alice", "exp": NOW + timedelta(hours=1)}, None, algorithm="none")
        },
        "invalid_token",
    ),
]


@pytest.mark.parametrize(("case", "headers", "code"), BAD_AUTH, ids=[c[0] for c in BAD_AUTH])
async def test_bad_credentials_get_401_on_every_authenticated_route(
    pool: asyncpg.Pool, case: str, headers: dict[str, str], code: str
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    before = await _counts(pool)
    some_id = uuid.uuid4()
    async with api_client(svc) as client:
        for method, path, body in [
            ("POST", "/v1/purchase-intents", {"credits": 1}),
            ("GET", f"/v1/purchase-intents/{some_id}", None),
            ("POST", f"/v1/purchase-intents/{some_id}/verify", {"signature": "1" * 88}),
            ("GET", "/v1/credits", None),
            ("POST", "/v1/credits/debits", {"user_id": "a", "credits": 1}),
        ]:
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == 401, (path, await resp.text())
            assert (await resp.json())["error"]["code"] == code
            assert "Bearer" in resp.headers["WWW-Authenticate"]
    assert await _counts(pool) == before


BAD_CREATE = [
    ("malformed json", b"{credits: 1", "invalid_json"),
    ("not an object", b"[1]", "invalid_json"),
    ("NaN", b'{"credits": NaN}', "invalid_json"),
    ("string credits", b'{"credits": "5"}', "invalid_request"),
    ("float credits", b'{"credits": 5.0}', "invalid_request"),
    ("bool credits", b'{"credits": true}', "invalid_request"),
    ("negative credits", b'{"credits": -5}', "invalid_request"),
    ("zero credits", b'{"credits": 0}', "invalid_request"),
    ("huge credits", b'{"credits": 100000000000000000000000000000}', "invalid_request"),
    ("huge exponent", b'{"credits": 1e400}', "invalid_request"),
    ("too many digits", b'{"credits": ' + b"9" * 5000 + b"}", "invalid_json"),
    ("over max per intent", b'{"credits": 1000001}', "invalid_credits"),
    ("unknown field", b'{"credits": 1, "price": 1}', "invalid_request"),
    ("missing credits", b"{}", "invalid_request"),
    (
        "wallet not base58",
        b'{"credits": 1, "wallet": "0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl"}',
        "invalid_request",
    ),
    ("wallet not 32 bytes", b'{"credits": 1, "wallet": "' + b"z" * 44 + b'"}', "invalid_wallet"),
    ("null body", b"null", "invalid_json"),
    ("not utf-8", b'{"credits": 1, "wallet": "\xff"}', "invalid_json"),
    ("lone surrogate", b'{"credits": 1, "wallet": "\xed\xa0\x80"}', "invalid_request"),
    ("deep nesting", b"[" * 100000 + b"]" * 100000, "body_too_large"),
]


@pytest.mark.parametrize(("case", "raw", "code"), BAD_CREATE, ids=[c[0] for c in BAD_CREATE])
async def test_bad_create_intent_body_is_refused(
    pool: asyncpg.Pool, case: str, raw: bytes, code: str
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    before = await _counts(pool)
    async with api_client(svc) as client:
        resp = await client.post(
            "/v1/purchase-intents",
            data=raw,
            headers={**bearer("alice"), "Content-Type": "application/json"},
        )
        assert 400 <= resp.status < 500, await resp.text()
        assert (await resp.json())["error"]["code"] == code
    assert await _counts(pool) == before


async def test_oversize_and_wrong_media_type_bodies_are_refused(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    before = await _counts(pool)
    async with api_client(svc) as client:
        big = b'{"credits": 1, "wallet": "' + b"a" * 20000 + b'"}'
        resp = await client.post(
            "/v1/purchase-intents",
            data=big,
            headers={**bearer("alice"), "Content-Type": "application/json"},
        )
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "body_too_large"
        form = await client.post(
            "/v1/purchase-intents",
            data=b"credits=1",
            headers={**bearer("alice"), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status == 400
        assert (await form.json())["error"]["code"] == "unsupported_media_type"
    assert await _counts(pool) == before


BAD_SIGNATURES = [
    ("short", "abc"),
    ("not base58", "0" * 88),
    ("wrong length", "1" * 100),
    ("number", 12345),
    ("null", None),
]


@pytest.mark.parametrize(("case", "sig"), BAD_SIGNATURES, ids=[c[0] for c in BAD_SIGNATURES])
async def test_bad_signatures_are_refused_before_the_chain(
    pool: asyncpg.Pool, case: str, sig: Any
) -> None:
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    async with api_client(svc) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 1}, headers=bearer("alice")
        )
        intent = await created.json()
        before = await _counts(pool)
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": sig},
            headers=bearer("alice"),
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] in {"invalid_request", "invalid_signature"}
        extra = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": "1" * 88, "intent": "x"},
            headers=bearer("alice"),
        )
        assert extra.status == 400
    assert verifier.calls == 0
    assert await _counts(pool) == before


async def test_unknown_or_foreign_intents_are_404(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    async with api_client(svc) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 1}, headers=bearer("alice")
        )
        intent = await created.json()
        before = await _counts(pool)
        for path in [
            f"/v1/purchase-intents/{intent['id']}",
            f"/v1/purchase-intents/{uuid.uuid4()}",
            "/v1/purchase-intents/not-a-uuid",
        ]:
            resp = await client.get(path, headers=bearer("mallory"))
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "intent_not_found"
        resp = await client.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": signature()},
            headers=bearer("mallory"),
        )
        assert resp.status == 404
        assert await _counts(pool) == before


BAD_DEBITS = [
    ("negative", {"user_id": "alice", "credits": -1}),
    ("zero", {"user_id": "alice", "credits": 0}),
    ("float", {"user_id": "alice", "credits": 1.5}),
    ("huge", {"user_id": "alice", "credits": 10**30}),
    ("empty user", {"user_id": "", "credits": 1}),
    ("unknown field", {"user_id": "alice", "credits": 1, "balance": 100}),
    # text PostgreSQL cannot store, or that no JWT `sub` could be (found by schemathesis)
    ("NUL in user", {"user_id": "al\u0000ice", "credits": 1}),
    ("lone surrogate in user", {"user_id": "al\udb27ice", "credits": 1}),
    ("control character in user", {"user_id": "al\nice", "credits": 1}),
    ("NUL in reason", {"user_id": "alice", "credits": 1, "reason": "x\u0000"}),
    ("lone surrogate in reason", {"user_id": "alice", "credits": 1, "reason": "\ud865"}),
]


@pytest.mark.parametrize(("case", "body"), BAD_DEBITS, ids=[c[0] for c in BAD_DEBITS])
async def test_bad_debits_are_refused(pool: asyncpg.Pool, case: str, body: dict[str, Any]) -> None:
    svc = build_services(pool, ScriptedVerifier())
    before = await _counts(pool)
    async with api_client(svc) as client:
        resp = await client.post(
            "/v1/credits/debits", json=body, headers={**service_bearer(), "Idempotency-Key": "k"}
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_request"
        long_key = await client.post(
            "/v1/credits/debits",
            json={"user_id": "alice", "credits": 1},
            headers={**service_bearer(), "Idempotency-Key": "k" * 500},
        )
        assert long_key.status == 400
        assert (await long_key.json())["error"]["code"] == "invalid_idempotency_key"
    assert await _counts(pool) == before


async def test_unknown_route_and_method_are_json_errors(pool: asyncpg.Pool) -> None:
    async with api_client(build_services(pool, ScriptedVerifier())) as client:
        missing = await client.get("/v1/nothing")
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "route_not_found"
        wrong = await client.delete("/v1/credits")
        assert wrong.status == 405
        assert (await wrong.json())["error"]["code"] == "method_not_allowed"
