"""Test helpers: settings, a scripted chain verifier (the port, in tests only), clients."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from solders.keypair import Keypair
from solders.signature import Signature

from api.app import create_app
from api.auth import DEBIT_SCOPE, mint_token
from core.chain.verdict import Confirmed, PaymentExpectation, Verdict
from core.config import Settings, load_settings
from core.gate import GateReader
from core.purchases import CreditGroups
from core.services import Services

JWT_SECRET = "test-secret-" + base64.b64encode(b"payops tests only").decode()
MINT = str(Keypair().pubkey())
TREASURY = str(Keypair().pubkey())


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "token_mint": MINT,
        "treasury_owner": TREASURY,
        "price_per_credit": 10_000,
        "token_decimals": 6,
        "intent_ttl_seconds": 900,
        # The tests hammer one user from one address on purpose; test_rate_limits turns them on.
        "rate_limit_per_ip_per_second": 0,
        "rate_limit_per_user_per_second": 0,
    }
    values.update(overrides)
    return load_settings(**values)


def signature() -> str:
    """A fresh, well-formed transaction signature."""
    return str(Signature(os.urandom(64)))


class ScriptedVerifier:
    """The chain-verifier port answered from a script: signature -> verdict.

    Unknown signatures pay exactly the expected amount. `delay` holds each answer, so
    concurrent verifies really overlap; `calls` counts how often the chain was asked.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.script: dict[str, Verdict] = {}
        self.calls = 0
        self.delay = delay

    async def verify(self, signature: str, expected: PaymentExpectation, now: datetime) -> Verdict:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.script.get(signature) or Confirmed(
            received=expected.amount, payer=None, slot=1, block_time=now
        )


def build_services(pool: asyncpg.Pool, verifier: Any, **overrides: Any) -> Services:
    settings = make_settings(**overrides)
    return Services(
        settings=settings,
        payment=settings.payment_config(),
        pool=pool,
        verifier=verifier,
        gate=GateReader(pool, ttl=0.0),
        credits=CreditGroups(settings.credit_group_max),
    )


def bearer(user: str, *scopes: str, secret: str = JWT_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, user, scopes=scopes)}"}


def service_bearer(name: str = "shop") -> dict[str, str]:
    return bearer(name, DEBIT_SCOPE)


@asynccontextmanager
async def api_client(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(services)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
