"""`payops up`: the whole stack on embedded defaults, for a laptop or a demo.

An embedded PostgreSQL in the data directory, the local chain (LiteSVM) with a fresh test
mint, treasury and funded payer, and the service on 127.0.0.1 — then it prints what to do
next. What it started is written to `<data_dir>/up.json` (the payer's development key
included) for `payops demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from core import db
from core.config import Settings
from localnet.chain import LocalChain
from localnet.programs import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from localnet.rpc import CHAIN_KEY
from localnet.server import LocalnetInfo, start_localnet
from localnet.tokens import build_payment
from payops import compose
from payops.serving import listening, wait_for_signal

STACK_FILE = "up.json"


def stack_file(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def read_stack(data_dir: Path) -> dict[str, Any]:
    path = stack_file(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: start the stack with `payops up` first")
    return dict(json.loads(path.read_text()))


def with_stack_settings(settings: Settings) -> Settings:
    """Settings completed from a running `payops up` stack in the same data directory, when
    the mint is not configured: lets `payops ops` and friends talk to the local stack."""
    if settings.token_mint is not None:
        return settings
    try:
        found = read_stack(settings.data_dir)
    except FileNotFoundError:
        return settings
    return settings.model_copy(update=found.get("settings", {}))


def _next_steps(service_url: str, info: LocalnetInfo, data_dir: Path) -> str:
    env = f"PAYOPS_DATA_DIR={data_dir}"
    return f"""
payops is up.
  service      {service_url}   (OpenAPI: {service_url}/openapi.json)
  local chain  {info.rpc_url}   mint {info.mint}, treasury {info.treasury_owner}
  database     embedded PostgreSQL in {data_dir / "postgres"}

Next, in another shell:
  export TOKEN=$({env} payops token alice)
  curl -s -X POST {service_url}/v1/purchase-intents -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"credits": 5}}'
  curl -s {service_url}/v1/credits -H "Authorization: Bearer $TOKEN"
  {env} payops demo        # a whole purchase, paid on the local chain, end to end
  {env} PAYOPS_SLACK_ONCALL=me payops ops --as me smoke     # the runbook on the CLI

Stop with Ctrl-C.
"""


SMOKE_AMOUNT = 10_000  # base units of the known-valid smoke payment


def _smoke_payment(chain: LocalChain, info: LocalnetInfo) -> dict[str, Any]:
    """Pay the treasury once with a reference of its own: the known-valid transaction the
    smoke test (/pay-smoke) verifies against. It is never credited to anyone."""
    reference = Keypair().pubkey()
    blockhash, _ = chain.latest_blockhash()
    tx = build_payment(
        info.payer_keypair(),
        blockhash,
        mint=Pubkey.from_string(info.mint),
        recipient_owner=Pubkey.from_string(info.treasury_owner),
        amount=SMOKE_AMOUNT,
        decimals=info.decimals,
        token_program=Pubkey.from_string(info.token_program),
        references=[reference],
    )
    chain.process(tx)
    return {
        "smoke_signature": str(tx.signatures[0]),
        "smoke_reference": str(reference),
        "smoke_amount": SMOKE_AMOUNT,
    }


@dataclass(frozen=True)
class Stack:
    service_url: str
    localnet: LocalnetInfo
    data_dir: Path
    jwt_secret: str
    chain_settings: dict[str, Any]  # what the stack set: mint, treasury, RPC, smoke payment


@contextlib.asynccontextmanager
async def local_stack(
    settings: Settings, data_dir: Path, *, port: int, chain_port: int, token_2022: bool = False
) -> AsyncIterator[Stack]:
    """Embedded PostgreSQL, the local chain and the service, all on 127.0.0.1 (0 = any port)."""
    program = TOKEN_2022_PROGRAM_ID if token_2022 else TOKEN_PROGRAM_ID
    runner, info = await start_localnet(
        "127.0.0.1", chain_port, token_program=program, decimals=settings.token_decimals
    )
    try:
        secret = settings.jwt_secret or SecretStr(compose.dev_jwt_secret(data_dir))
        smoke = _smoke_payment(runner.app[CHAIN_KEY], info)
        chain_settings = {
            **smoke,
            "solana_rpc_url": info.rpc_url,
            "token_mint": info.mint,
            "token_program": info.token_program,
            "treasury_owner": info.treasury_owner,
            "treasury_token_account": info.treasury_token_account,
        }
        stack_settings = settings.model_copy(
            update={**chain_settings, "data_dir": data_dir, "jwt_secret": secret}
        )
        async with compose.database(stack_settings) as dsn:
            await db.migrate(dsn)
            async with (
                compose.services(stack_settings, dsn) as running,
                listening(compose.service_app(running), "127.0.0.1", port) as urls,
            ):
                yield Stack(urls[0], info, data_dir, secret.get_secret_value(), chain_settings)
    finally:
        await runner.cleanup()


async def up(settings: Settings, args: argparse.Namespace) -> int:
    data_dir: Path = (args.data_dir or settings.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before serving)
    async with local_stack(
        settings, data_dir, port=args.port, chain_port=args.chain_port, token_2022=args.token_2022
    ) as stack:
        path = stack_file(data_dir)
        path.touch(mode=0o600)  # holds the local payer's development key
        path.write_text(
            json.dumps(
                {
                    "service_url": stack.service_url,
                    "localnet": stack.localnet.to_json(),
                    "settings": stack.chain_settings,
                },
                indent=2,
            )
        )
        try:
            print(_next_steps(stack.service_url, stack.localnet, data_dir), flush=True)
            await wait_for_signal()
        finally:
            path.unlink(missing_ok=True)
    return 0
