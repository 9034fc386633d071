"""A real local chain and the services wired to it, for the tests of payments nobody verified
(the recovery sweep, the treasury watcher)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from core import purchases
from core import purchases as recovery
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.chain.solana_verifier import SolanaVerifier
from core.purchases import Intent
from core.services import Services
from localnet.server import LocalnetInfo, start_localnet
from localnet.wallet import Wallet
from tests.support import build_services

GRACE = timedelta(seconds=600)


@dataclass
class Rig:
    services: Services
    rpc: SolanaRpc
    info: LocalnetInfo
    wallet: Wallet
    pool: asyncpg.Pool

    async def intent(self, user: str, credits: int = 3, *, age: timedelta | None = None) -> Intent:
        """A PENDING intent, created `age` ago (now by default)."""
        svc = self.services
        if age is not None:
            svc = replace(svc, clock=lambda: datetime.now(UTC) - age)
        async with self.pool.acquire() as conn:
            return await purchases.create_intent(
                svc, conn, Actor(user, "api"), credits=credits, wallet=None
            )

    async def pay(self, intent: Intent, *, amount: int | None = None) -> str:
        """Pay the intent the Solana Pay way (its reference among the keys); wait until final."""
        as_api = {
            "token_program": intent.token_program,
            "mint": intent.mint,
            "recipient": intent.recipient,
            "amount": str(intent.amount),
            "reference": intent.reference,
        }
        signature = await self.wallet.pay(as_api, decimals=self.info.decimals, amount=amount)
        status = await self.wallet.wait_finalized(signature)
        assert status["err"] is None, status
        return signature

    async def sweep(self, rpc: SolanaRpc | None = None) -> recovery.SweepReport:
        return await recovery.sweep(self.services, rpc or self.rpc, now=datetime.now(UTC))


def _services(pool: asyncpg.Pool, info: LocalnetInfo, rpc: SolanaRpc) -> Services:
    return build_services(
        pool,
        SolanaVerifier(rpc, grace=GRACE),
        token_mint=info.mint,
        treasury_owner=info.treasury_owner,
        token_program=info.token_program,
        token_decimals=info.decimals,
        solana_rpc_url=info.rpc_url,
        expiry_grace_seconds=int(GRACE.total_seconds()),
        pending_sla_seconds=3600,
        recovery_min_age_seconds=0,
    )


@pytest.fixture
async def rig(pool: asyncpg.Pool) -> AsyncIterator[Rig]:
    runner, info = await start_localnet("127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as session,
            SolanaRpc(info.rpc_url, timeout_seconds=5, max_retries=0) as rpc,
        ):
            wallet = Wallet(info.rpc_url, info.payer_keypair(), session)
            yield Rig(_services(pool, info, rpc), rpc, info, wallet, pool)
    finally:
        await runner.cleanup()
