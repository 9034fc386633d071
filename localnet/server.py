"""Starting a local chain for development, demos and tests: a test mint, a treasury to be paid,
and a funded payer wallet, served over JSON-RPC.

    payops localnet [--host H] [--port P] [--token-2022] [--transfer-fee-bps N]
    python -m localnet ...   (the same)

prints the `LocalnetInfo` as JSON, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from aiohttp import web
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from localnet.chain import LocalChain
from localnet.programs import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from localnet.rpc import create_app
from localnet.tokens import TransferFee, create_mint, create_token_account, mint_to

U64_MAX: Final = 2**64 - 1
LAMPORTS_PER_SOL: Final = 10**9


@dataclass(frozen=True, slots=True)
class LocalnetInfo:
    """Where the local chain listens and the accounts it was seeded with. Secrets are base58
    64-byte keypairs (`Keypair.from_base58_string`), for development only."""

    rpc_url: str
    mint: str
    token_program: str
    decimals: int
    transfer_fee_bps: int | None
    transfer_fee_max: int | None
    mint_authority: str
    mint_authority_secret: str
    treasury_owner: str
    treasury_owner_secret: str
    treasury_token_account: str
    payer: str
    payer_secret: str
    payer_token_account: str
    payer_token_balance: int
    payer_lamports: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def payer_keypair(self) -> Keypair:
        return Keypair.from_base58_string(self.payer_secret)

    def treasury_keypair(self) -> Keypair:
        return Keypair.from_base58_string(self.treasury_owner_secret)

    def mint_authority_keypair(self) -> Keypair:
        return Keypair.from_base58_string(self.mint_authority_secret)


def token_program_id(value: Pubkey | str) -> Pubkey:
    """`value` as a token program id; also takes "token" / "token-2022"."""
    if isinstance(value, Pubkey):
        return value
    named = {"token": TOKEN_PROGRAM_ID, "spl-token": TOKEN_PROGRAM_ID}
    named |= {"token-2022": TOKEN_2022_PROGRAM_ID, "spl-token-2022": TOKEN_2022_PROGRAM_ID}
    return named.get(value) or Pubkey.from_string(value)


def seed_chain(
    chain: LocalChain,
    *,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    decimals: int = 6,
    transfer_fee_bps: int | None = None,
    transfer_fee_max: int = U64_MAX,
    payer_lamports: int = 100 * LAMPORTS_PER_SOL,
    payer_tokens: int | None = None,
    rpc_url: str = "",
) -> LocalnetInfo:
    """Create the test mint, the treasury (owner and token account) and a funded payer."""
    fee = None if transfer_fee_bps is None else TransferFee(transfer_fee_bps, transfer_fee_max)
    authority, treasury, payer = Keypair(), Keypair(), Keypair()
    chain.airdrop(authority.pubkey(), 10 * LAMPORTS_PER_SOL)
    chain.airdrop(payer.pubkey(), payer_lamports)
    mint = create_mint(
        chain, authority, decimals=decimals, token_program=token_program, transfer_fee=fee
    )
    treasury_account = create_token_account(chain, authority, treasury.pubkey(), mint)
    tokens = payer_tokens if payer_tokens is not None else 1_000_000 * 10**decimals
    payer_account = mint_to(chain, authority, mint, payer.pubkey(), tokens)
    return LocalnetInfo(
        rpc_url=rpc_url,
        mint=str(mint),
        token_program=str(token_program),
        decimals=decimals,
        transfer_fee_bps=transfer_fee_bps,
        transfer_fee_max=None if fee is None else transfer_fee_max,
        mint_authority=str(authority.pubkey()),
        mint_authority_secret=str(authority),
        treasury_owner=str(treasury.pubkey()),
        treasury_owner_secret=str(treasury),
        treasury_token_account=str(treasury_account),
        payer=str(payer.pubkey()),
        payer_secret=str(payer),
        payer_token_account=str(payer_account),
        payer_token_balance=tokens,
        payer_lamports=payer_lamports,
    )


async def start_localnet(
    host: str = "127.0.0.1",
    port: int = 8899,
    *,
    token_program: Pubkey | str = TOKEN_PROGRAM_ID,
    decimals: int = 6,
    transfer_fee_bps: int | None = None,
    transfer_fee_max: int = U64_MAX,
    payer_lamports: int = 100 * LAMPORTS_PER_SOL,
    payer_tokens: int | None = None,
    chain: LocalChain | None = None,
) -> tuple[web.AppRunner, LocalnetInfo]:
    """Seed a chain (a new one by default) and serve it on host:port (0 picks a free port).
    Stop it with `await runner.cleanup()`; the chain is `runner.app[CHAIN_KEY]`."""
    local = chain or LocalChain()
    seeded = seed_chain(
        local,
        token_program=token_program_id(token_program),
        decimals=decimals,
        transfer_fee_bps=transfer_fee_bps,
        transfer_fee_max=transfer_fee_max,
        payer_lamports=payer_lamports,
        payer_tokens=payer_tokens,
    )
    runner = await serve_chain(local, host, port)
    info = LocalnetInfo(**{**seeded.to_json(), "rpc_url": rpc_url_of(runner)})
    return runner, info


async def serve_chain(chain: LocalChain, host: str, port: int) -> web.AppRunner:
    """Serve `chain` over JSON-RPC on host:port (0 picks a free port)."""
    runner = web.AppRunner(create_app(chain), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def rpc_url_of(runner: web.AppRunner) -> str:
    """The URL a served chain answers on."""
    bound_host, bound_port = runner.addresses[0][:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return f"http://{url_host}:{bound_port}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `payops localnet` and `python -m localnet`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8899, help="JSON-RPC port (8899; 0 = any)")
    parser.add_argument("--token-2022", action="store_true", help="mint with Token-2022")
    parser.add_argument("--decimals", type=int, default=6, help="the test mint's decimals (6)")
    parser.add_argument(
        "--transfer-fee-bps",
        type=int,
        default=None,
        help="a Token-2022 transfer fee in basis points (implies --token-2022)",
    )
    parser.add_argument(
        "--transfer-fee-max", type=int, default=U64_MAX, help="the fee's cap in base units"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localnet", description="Serve a local Solana chain over JSON-RPC."
    )
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Start, print the info as JSON, serve until SIGINT/SIGTERM."""
    fee_bps: int | None = args.transfer_fee_bps
    use_2022: bool = args.token_2022 or fee_bps is not None
    runner, info = await start_localnet(
        args.host,
        args.port,
        token_program=TOKEN_2022_PROGRAM_ID if use_2022 else TOKEN_PROGRAM_ID,
        decimals=args.decimals,
        transfer_fee_bps=fee_bps,
        transfer_fee_max=args.transfer_fee_max,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(json.dumps(info.to_json(), indent=2), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def address_in_use(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def run(args: argparse.Namespace, prog: str = "python -m localnet") -> int:
    """Serve as `args` say; a port that cannot be bound is one line on stderr, exit 2."""
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        if getattr(args, "debug", False) or not address_in_use(exc):
            raise
        print(
            f"{prog}: cannot listen on {args.host}:{args.port} "
            f"({os.strerror(exc.errno).lower() if exc.errno else exc}): "
            "stop what uses it or choose another with --port",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_parser().parse_args(argv))
