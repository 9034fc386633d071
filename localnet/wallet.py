"""A minimal wallet over JSON-RPC: pay a purchase intent the way a Solana Pay wallet does.

Used by `payops demo`, the end-to-end tests and the benchmarks; it talks to any node
(the local chain or Surfpool) only through JSON-RPC.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from localnet.tokens import build_payment

_ids = itertools.count(1)


class RpcError(Exception):
    pass


class Wallet:
    """A payer keypair and a JSON-RPC endpoint."""

    def __init__(self, rpc_url: str, payer: Keypair, session: aiohttp.ClientSession) -> None:
        self.rpc_url = rpc_url
        self.payer = payer
        self._session = session

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
        async with self._session.post(self.rpc_url, json=body) as resp:
            answer = await resp.json()
        if "error" in answer:
            raise RpcError(f"{method}: {answer['error']}")
        return answer["result"]

    async def send(self, tx_bytes: bytes) -> str:
        encoded = base64.b64encode(tx_bytes).decode()
        return str(await self.call("sendTransaction", [encoded, {"encoding": "base64"}]))

    async def wait_finalized(self, signature: str, *, within: float = 10.0) -> dict[str, Any]:
        """Poll the signature until it is finalized; its status (with `err`)."""
        async with asyncio.timeout(within):
            while True:
                result = await self.call(
                    "getSignatureStatuses", [[signature], {"searchTransactionHistory": True}]
                )
                status = result["value"][0]
                if status is not None and status.get("confirmationStatus") == "finalized":
                    return dict(status)
                await asyncio.sleep(0.05)

    async def pay(
        self,
        intent: Mapping[str, Any],
        *,
        decimals: int,
        amount: int | None = None,
        mint: str | None = None,
        recipient: str | None = None,
        with_reference: bool = True,
        memo: str | None = None,
        create_recipient_account: bool = False,
    ) -> str:
        """Pay an intent (as the API returned it); the overrides make deliberately wrong ones."""
        token_program = Pubkey.from_string(intent["token_program"])
        blockhash = (await self.call("getLatestBlockhash", [{"commitment": "finalized"}]))["value"]
        tx = build_payment(
            self.payer,
            Hash.from_string(blockhash["blockhash"]),
            mint=Pubkey.from_string(mint or intent["mint"]),
            recipient_owner=Pubkey.from_string(recipient or intent["recipient"]),
            amount=int(intent["amount"]) if amount is None else amount,
            decimals=decimals,
            token_program=token_program,
            references=[Pubkey.from_string(intent["reference"])] if with_reference else [],
            memo=memo,
            create_recipient_account=create_recipient_account,
        )
        return await self.send(bytes(tx))
