"""The chain side of reconciliation on the real local chain (LiteSVM with the SPL programs):
payments that reached the treasury and credited nothing, found by the intent's reference or
in the treasury's history, with real verification (`SolanaVerifier` over `SolanaRpc`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from core.chain.rpc import SolanaRpc
from core.chain.solana_verifier import SolanaVerifier
from core.recon import RpcChainLookup
from core.services import Services
from localnet import LocalnetInfo, start_localnet
from localnet.wallet import Wallet
from tests.integration.test_recon import adjust, create_intent, kinds, recon, verify
from tests.support import build_services

pytestmark = pytest.mark.timeout(90)


@dataclass
class Rig:
    svc: Services
    info: LocalnetInfo
    wallet: Wallet
    rpc: SolanaRpc

    @property
    def chain(self) -> RpcChainLookup:
        return RpcChainLookup(self.rpc)

    async def pay(self, intent: dict[str, Any], **overrides: Any) -> str:
        sig = await self.wallet.pay(intent, decimals=self.info.decimals, **overrides)
        status = await self.wallet.wait_finalized(sig)
        assert status["err"] is None, status
        return sig


@pytest.fixture
async def rig(pool: asyncpg.Pool) -> AsyncIterator[Rig]:
    runner, info = await start_localnet("127.0.0.1", 0)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    rpc = SolanaRpc(info.rpc_url, timeout_seconds=5, max_retries=1, backoff_cap_seconds=0.5)
    try:
        svc = build_services(
            pool,
            SolanaVerifier(rpc, grace=timedelta(minutes=10)),
            token_mint=info.mint,
            token_program=info.token_program,
            token_decimals=info.decimals,
            treasury_owner=info.treasury_owner,
            treasury_token_account=info.treasury_token_account,
            solana_rpc_url=info.rpc_url,
        )
        yield Rig(svc, info, Wallet(info.rpc_url, info.payer_keypair(), session), rpc)
    finally:
        await rpc.close()
        await session.close()
        await runner.cleanup()


async def test_paid_on_chain_never_verified_is_found_by_its_reference(rig: Rig) -> None:
    intent = await create_intent(rig.svc, "alice", 3)
    sig = await rig.pay(intent)
    first = await recon(rig.svc, chain=rig.chain)
    assert first.chain_checked
    assert kinds(first) == ["unmatched_payment"]
    [f] = first.findings
    assert (f.signatures, f.tokens) == ((sig,), int(intent["amount"]))
    assert (f.intent_ids, f.user_ids) == ((intent["id"],), ("alice",))
    assert first.drift_tokens == int(intent["amount"])
    second = await recon(rig.svc, chain=rig.chain)
    assert [x.fingerprint for x in second.findings] == [f.fingerprint]
    assert second.new_findings == []
    # the user (or the recovery sweep) verifies it after all: credited once, resolved
    status, body = await verify(rig.svc, "alice", intent["id"], sig)
    assert status == 200, body
    third = await recon(rig.svc, chain=rig.chain)
    assert third.findings == []
    assert [x.fingerprint for x in third.resolved_findings] == [f.fingerprint]
    assert third.zero_drift


async def test_payment_without_reference_is_found_in_the_treasury_history(rig: Rig) -> None:
    intent = await create_intent(rig.svc, "bob", 2)
    sig = await rig.pay(intent, with_reference=False)  # names no intent at all
    first = await recon(rig.svc, chain=rig.chain)
    assert kinds(first) == ["unmatched_payment"]
    [f] = first.findings
    assert (f.signatures, f.tokens, f.intent_ids) == ((sig,), int(intent["amount"]), ())
    assert (await recon(rig.svc, chain=rig.chain)).new_findings == []
    await adjust(rig.svc.pool, "bob", 2, [sig])  # identified by support: credited by hand
    third = await recon(rig.svc, chain=rig.chain)
    assert [x.fingerprint for x in third.resolved_findings] == [f.fingerprint]
    assert third.findings == []
    assert third.zero_drift


async def test_rejected_payment_then_a_good_one(rig: Rig) -> None:
    intent = await create_intent(rig.svc, "carol", 3)
    unbound = await rig.pay(intent, with_reference=False)
    status, body = await verify(rig.svc, "carol", intent["id"], unbound)
    assert (status, body["error"]["code"]) == (422, "unbound_payment")
    good = await rig.pay(intent)
    assert (await verify(rig.svc, "carol", intent["id"], good))[0] == 200
    first = await recon(rig.svc, chain=rig.chain)
    # the database's view (a failed verification, then success) and the chain's (the
    # rejected payment's tokens are at the treasury, credited to nobody)
    assert kinds(first) == ["failed_then_succeeded", "unmatched_payment"]
    assert {f.signatures for f in first.findings} == {(unbound,)}
    assert (await recon(rig.svc, chain=rig.chain)).new_findings == []
    await adjust(rig.svc.pool, "carol", 3, [unbound])  # she paid twice: credit the first
    third = await recon(rig.svc, chain=rig.chain)
    assert third.findings == []
    assert len(third.resolved_findings) == 2
    assert third.zero_drift


async def test_verified_payments_are_matched(rig: Rig) -> None:
    intent = await create_intent(rig.svc, "dave", 4)
    sig = await rig.pay(intent)
    assert (await verify(rig.svc, "dave", intent["id"], sig))[0] == 200
    run = await recon(rig.svc, chain=rig.chain)
    assert run.chain_checked
    assert run.findings == []
    assert run.zero_drift


async def test_smoke_payment_is_ignored(rig: Rig) -> None:
    intent = await create_intent(rig.svc, "erin", 1)
    smoke = await rig.pay(intent)
    run = await recon(rig.svc, chain=rig.chain, ignore_signatures={smoke})
    assert run.findings == []


async def test_an_unreachable_node_leaves_the_chain_unchecked(rig: Rig) -> None:
    intent = await create_intent(rig.svc, "frank", 2)
    await rig.pay(intent)
    async with SolanaRpc("http://127.0.0.1:9", timeout_seconds=1, max_retries=0) as dead:
        down = await recon(rig.svc, chain=RpcChainLookup(dead))
    assert not down.chain_checked
    assert kinds(down) == ["chain_unchecked"]
    assert not down.zero_drift
    # a run without the chain cannot check it either: the finding stays
    assert kinds(await recon(rig.svc)) == ["chain_unchecked"]
    back = await recon(rig.svc, chain=rig.chain)
    assert back.chain_checked
    assert kinds(back) == ["unmatched_payment"]
    assert [f.kind for f in back.resolved_findings] == ["chain_unchecked"]
