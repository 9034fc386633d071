"""`payops demo`: a whole purchase, end to end, on the local chain.

Against the stack `payops up` is running (found through `<data_dir>/up.json`), or on a
throwaway stack of its own: create a user token and an intent, pay it with a real SPL
transfer carrying the intent's reference key, verify it, show the credit; then show that a
duplicate verify does not credit twice and that the same signature is refused for another
intent. Exits non-zero if anything behaves otherwise.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from solders.keypair import Keypair

from api.auth import mint_token
from core.config import Settings
from localnet.server import LocalnetInfo
from localnet.wallet import Wallet
from payops import compose
from payops.up import Stack, local_stack, read_stack


class DemoFailed(Exception):
    pass


def _say(step: str, detail: Any = "") -> None:
    text = detail if isinstance(detail, str) else json.dumps(detail, indent=2)
    print(f"\n== {step}\n{text}".rstrip(), flush=True)


@contextlib.asynccontextmanager
async def _stack(settings: Settings, own: bool) -> AsyncIterator[Stack]:
    found = None
    if not own:
        with contextlib.suppress(FileNotFoundError):
            found = read_stack(settings.data_dir)
    if found is not None:
        secret = (
            settings.jwt_secret.get_secret_value()
            if settings.jwt_secret
            else compose.dev_jwt_secret(settings.data_dir)
        )
        yield Stack(
            found["service_url"],
            LocalnetInfo(**found["localnet"]),
            settings.data_dir,
            secret,
            found.get("settings", {}),
        )
        return
    _say("no `payops up` stack found: starting a throwaway one")
    with tempfile.TemporaryDirectory(prefix="payops-demo-") as tmp:
        own_settings = settings.model_copy(update={"database_url": None})
        async with local_stack(own_settings, Path(tmp), port=0, chain_port=0) as stack:
            yield stack


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    return dict(await resp.json())


async def demo(settings: Settings, *, own_stack: bool = False, user: str = "demo-user") -> int:
    async with _stack(settings, own_stack) as stack, aiohttp.ClientSession() as http:
        info = stack.localnet
        auth = {"Authorization": f"Bearer {mint_token(stack.jwt_secret, user)}"}
        wallet = Wallet(info.rpc_url, Keypair.from_base58_string(info.payer_secret), http)
        _say("stack", {"service": stack.service_url, "chain": info.rpc_url, "mint": info.mint})

        async with http.get(f"{stack.service_url}/v1/credits", headers=auth) as resp:
            before = (await _json(resp))["balance"]
        async with http.post(
            f"{stack.service_url}/v1/purchase-intents", json={"credits": 5}, headers=auth
        ) as resp:
            intent = await _json(resp)
            if resp.status != 201:
                raise DemoFailed(f"creating an intent answered {resp.status}: {intent}")
        _say(
            "1. purchase intent created",
            {k: intent[k] for k in ("id", "credits", "amount", "reference", "solana_pay_url")},
        )

        signature = await wallet.pay(intent, decimals=info.decimals, memo=intent["memo"])
        status = await wallet.wait_finalized(signature)
        _say(
            "2. paid on the local chain",
            {"signature": signature, "status": status.get("confirmationStatus")},
        )

        verify_url = f"{stack.service_url}/v1/purchase-intents/{intent['id']}/verify"
        async with http.post(verify_url, json={"signature": signature}, headers=auth) as resp:
            verified = await _json(resp)
        _say(f"3. verify -> {resp.status}", verified)
        if resp.status != 200 or verified["balance"] != before + 5:
            raise DemoFailed("the payment did not credit 5 credits")

        async with http.post(verify_url, json={"signature": signature}, headers=auth) as resp:
            again = await _json(resp)
        _say(f"4. duplicate verify -> {resp.status}", again)
        if resp.status != 200 or not again["already_credited"] or again["balance"] != before + 5:
            raise DemoFailed("a duplicate verify changed the balance")

        async with http.post(
            f"{stack.service_url}/v1/purchase-intents", json={"credits": 5}, headers=auth
        ) as resp:
            other = await _json(resp)
        other_url = f"{stack.service_url}/v1/purchase-intents/{other['id']}/verify"
        async with http.post(other_url, json={"signature": signature}, headers=auth) as resp:
            replay = await _json(resp)
        _say(f"5. same signature for another intent -> {resp.status}", replay)
        if resp.status != 409:
            raise DemoFailed("a replayed signature was not refused")

        async with http.get(f"{stack.service_url}/v1/credits", headers=auth) as resp:
            credits = await _json(resp)
        _say("6. balance", {"before": before, "after": credits["balance"]})
        print("\ndemo passed: credited once, duplicate ignored, replay refused.")
    return 0
