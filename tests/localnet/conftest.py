"""A local chain served on an ephemeral loopback port, and a solana-py client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from localnet import CHAIN_KEY, LocalChain, LocalnetInfo, start_localnet
from localnet.tokens import build_payment


@dataclass
class Net:
    """A running local chain: its info, the chain itself, a solana-py client, raw JSON-RPC."""

    info: LocalnetInfo
    chain: LocalChain
    client: AsyncClient
    session: aiohttp.ClientSession

    @property
    def mint(self) -> Pubkey:
        return Pubkey.from_string(self.info.mint)

    @property
    def token_program(self) -> Pubkey:
        return Pubkey.from_string(self.info.token_program)

    @property
    def treasury(self) -> Pubkey:
        return Pubkey.from_string(self.info.treasury_owner)

    @property
    def treasury_account(self) -> Pubkey:
        return Pubkey.from_string(self.info.treasury_token_account)

    async def call(self, method: str, params: list[Any] | None = None) -> dict[str, Any]:
        """The whole JSON-RPC response (result or error) for one call."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        async with self.session.post(self.info.rpc_url, json=body) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer

    async def result(self, method: str, params: list[Any] | None = None) -> Any:
        answer = await self.call(method, params)
        assert "error" not in answer, answer
        return answer["result"]

    async def pay(
        self,
        amount: int,
        *,
        recipient: Pubkey | None = None,
        references: list[Pubkey] | None = None,
        memo: str | None = None,
        create_recipient_account: bool = False,
        skip_preflight: bool = False,
    ) -> Signature:
        """Pay `amount` base units from the seeded payer, sent as base64 over JSON-RPC."""
        blockhash = (await self.client.get_latest_blockhash()).value.blockhash
        tx = build_payment(
            self.info.payer_keypair(),
            blockhash,
            mint=self.mint,
            recipient_owner=recipient or self.treasury,
            amount=amount,
            decimals=self.info.decimals,
            token_program=self.token_program,
            references=references or [],
            memo=memo,
            create_recipient_account=create_recipient_account,
        )
        opts = TxOpts(skip_preflight=skip_preflight)
        return (await self.client.send_raw_transaction(bytes(tx), opts)).value


async def _start(**kwargs: Any) -> AsyncIterator[Net]:
    runner, info = await start_localnet("127.0.0.1", 0, **kwargs)
    client = AsyncClient(info.rpc_url, timeout=10)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Net(info, runner.app[CHAIN_KEY], client, session)
    finally:
        await session.close()
        await client.close()
        await runner.cleanup()


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    """SPL Token mint with 6 decimals."""
    async for started in _start(decimals=6):
        yield started


@pytest.fixture
async def fee_net() -> AsyncIterator[Net]:
    """Token-2022 mint with a 1% transfer fee (no cap)."""
    async for started in _start(token_program="token-2022", decimals=6, transfer_fee_bps=100):
        yield started


def new_key() -> Pubkey:
    return Keypair().pubkey()
