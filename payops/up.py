"""`payops up`: the whole stack on embedded defaults, for a laptop or a demo.

An embedded PostgreSQL in the data directory, the local chain (LiteSVM) with a fresh test
mint, treasury and funded payer, and the service on 127.0.0.1 — then it prints what to do
next. What it started is written to `<data_dir>/up.json` (the payer's development key
included) for `payops demo`.

The data directory keeps the database and the local chain (`chain.state`) across restarts,
so intents and the payments they refer to stay consistent; `--reset` forgets both. Only one
`payops up` runs per data directory (`payops.claim`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from core import db
from core.config import Settings
from core.errors import ConfigError
from localnet.chain import LocalChain
from localnet.persist import ChainStateUnreadable, load_chain, saved_while_running
from localnet.programs import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from localnet.rpc import CHAIN_KEY
from localnet.server import LocalnetInfo, rpc_url_of, serve_chain, start_localnet
from localnet.tokens import build_payment
from payops import compose
from payops.claim import claim_data_dir
from payops.serving import cannot_bind, listening, port_taken, wait_for_signal

STACK_FILE = "up.json"
CHAIN_STATE_FILE = "chain.state"
Say = Callable[[str], None]


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


def payops_command() -> str:
    """How a fresh shell runs this payops: `payops` when that is what PATH finds, else the
    full path of the script that is running (e.g. a virtualenv's bin/payops)."""
    script = Path(sys.argv[0]).absolute()
    if script.name != "payops" or not script.is_file():
        return f"{shlex.quote(sys.executable)} -m payops"
    on_path = shutil.which("payops")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "payops"
    return shlex.quote(str(script))


def local_operator() -> str:
    """Who is on call on a local stack when nobody is named: the login of its starter."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "me"
    return name if name.isascii() and name.isprintable() and " " not in name else "me"


def _next_steps(
    service_url: str, info: LocalnetInfo, data_dir: Path, *, custom_secret: bool, operator: str
) -> str:
    payops = payops_command()
    operator = shlex.quote(operator)
    env = f"PAYOPS_DATA_DIR={shlex.quote(str(data_dir))}"
    secret_note = (
        "\n  (this stack uses PAYOPS_JWT_SECRET: export the same value in that shell first)"
        if custom_secret
        else ""
    )
    return f"""
payops is up.
  service      {service_url}   (OpenAPI: {service_url}/openapi.json)
  local chain  {info.rpc_url}   mint {info.mint}, treasury {info.treasury_owner}
  database     embedded PostgreSQL in {data_dir / "postgres"}
  data         {data_dir}   (kept across restarts; `payops up --reset` starts afresh)

Next, in another shell:{secret_note}
  export TOKEN=$({env} {payops} token alice)
  curl -s -X POST {service_url}/v1/purchase-intents -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"credits": 5}}'
  curl -s {service_url}/v1/credits -H "Authorization: Bearer $TOKEN"
  {env} {payops} demo        # a whole purchase, paid on the local chain, end to end
  {env} PAYOPS_OPERATOR_TOKEN=$({env} {payops} token --operator {operator}) {payops} ops smoke
      # the runbook on the CLI, as {operator} (on call on this stack)

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


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def _chain_port(port: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if not cannot_bind(exc):
            raise
        raise port_taken("127.0.0.1", port, exc, "--chain-port") from exc


@contextlib.asynccontextmanager
async def _chain(
    chain_port: int, token_program: Pubkey, decimals: int, state: Path | None, say: Say
) -> AsyncIterator[tuple[LocalChain, LocalnetInfo, dict[str, Any]]]:
    """The local chain served on 127.0.0.1:chain_port: the one saved at `state` if there is
    one, else a freshly seeded one with its smoke payment. Saved to `state` while it runs."""
    try:
        restored = None if state is None else load_chain(state)
    except ChainStateUnreadable as exc:
        raise ConfigError(f"{exc}: start afresh with `payops up --reset`") from exc
    if restored is None:
        say(f"seeding a new local chain (test mint, treasury, payer) on 127.0.0.1:{chain_port}")
        with _chain_port(chain_port):
            runner, info = await start_localnet(
                "127.0.0.1", chain_port, token_program=token_program, decimals=decimals
            )
        chain = runner.app[CHAIN_KEY]
        smoke = _smoke_payment(chain, info)
    else:
        chain, meta = restored
        say(
            f"restoring the local chain from {state} "
            f"({chain.transaction_count} transactions) on 127.0.0.1:{chain_port}"
        )
        with _chain_port(chain_port):
            runner = await serve_chain(chain, "127.0.0.1", chain_port)
        seeded = LocalnetInfo(**meta["localnet"])
        info = dataclasses.replace(seeded, rpc_url=rpc_url_of(runner))
        smoke = dict(meta["smoke"])
        if info.token_program != str(token_program):
            say(
                f"note: the saved chain's mint uses {info.token_program}; "
                "`payops up --reset` makes a new one"
            )
    try:
        if state is None:
            yield chain, info, smoke
        else:
            meta = {"localnet": {**info.to_json(), "rpc_url": ""}, "smoke": smoke}
            async with saved_while_running(chain, state, meta):
                yield chain, info, smoke
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def local_stack(
    settings: Settings,
    data_dir: Path,
    *,
    port: int,
    chain_port: int,
    token_2022: bool = False,
    keep_chain: bool = False,
    say: Say = _quiet,
) -> AsyncIterator[Stack]:
    """Embedded PostgreSQL, the local chain and the service, all on 127.0.0.1 (0 = any port).
    With `keep_chain`, the chain is saved in `data_dir/chain.state` and restored from there."""
    program = TOKEN_2022_PROGRAM_ID if token_2022 else TOKEN_PROGRAM_ID
    state = data_dir / CHAIN_STATE_FILE if keep_chain else None
    async with _chain(chain_port, program, settings.token_decimals, state, say) as (
        _,
        info,
        smoke,
    ):
        secret = settings.jwt_secret or SecretStr(compose.dev_jwt_secret(data_dir))
        chain_settings = {
            **smoke,
            "solana_rpc_url": info.rpc_url,
            "token_mint": info.mint,
            "token_program": info.token_program,
            "treasury_owner": info.treasury_owner,
            "treasury_token_account": info.treasury_token_account,
        }
        # On the local stack the person who started it is on call unless someone else is
        # named (`payops token --operator <them>` then proves it to the CLI).
        oncall = settings.slack_oncall or (local_operator(),)
        stack_settings = settings.model_copy(
            update={
                **chain_settings,
                "data_dir": data_dir,
                "jwt_secret": secret,
                "slack_oncall": oncall,
            }
        )
        if stack_settings.database_url is None:
            pgdata = data_dir / "postgres"
            if (pgdata / "PG_VERSION").exists():
                say(f"starting PostgreSQL in {pgdata}")
            else:
                say(f"initialising PostgreSQL in {pgdata} (first run takes a few seconds)")
        async with compose.database(stack_settings) as dsn:
            say("applying database migrations")
            await db.migrate(dsn)
            say(f"starting the service on 127.0.0.1:{port}")
            async with (
                compose.services(stack_settings, dsn) as running,
                listening(
                    compose.service_app(running), "127.0.0.1", port, change_with="--port"
                ) as urls,
            ):
                yield Stack(urls[0], info, data_dir, secret.get_secret_value(), chain_settings)


def _say(line: str) -> None:
    print(f"payops up: {line}", flush=True)


def _reset(data_dir: Path) -> None:
    """Forget the database and the chain of `data_dir` (the development secret stays)."""
    for name in ("postgres", CHAIN_STATE_FILE, STACK_FILE):
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


async def up(settings: Settings, args: argparse.Namespace) -> int:
    data_dir: Path = (args.data_dir or settings.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before serving)
    with claim_data_dir(data_dir, port=args.port, chain_port=args.chain_port) as claim:
        if args.reset:
            _say(f"--reset: removing the database and the local chain in {data_dir}")
            _reset(data_dir)
        elif (
            settings.database_url is None
            and (data_dir / "postgres").exists()
            and not (data_dir / CHAIN_STATE_FILE).exists()
        ):
            _say(
                "note: the database here was written against a local chain that was not "
                "kept; `payops up --reset` starts both afresh"
            )
        async with local_stack(
            settings,
            data_dir,
            port=args.port,
            chain_port=args.chain_port,
            token_2022=args.token_2022,
            keep_chain=True,
            say=_say,
        ) as stack:
            claim.running(stack.service_url, stack.localnet.rpc_url)
            path = stack_file(data_dir)
            path.touch(mode=0o600)  # holds the local payer's development key
            path.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "service_url": stack.service_url,
                        "localnet": stack.localnet.to_json(),
                        "settings": stack.chain_settings,
                    },
                    indent=2,
                )
            )
            try:
                print(
                    _next_steps(
                        stack.service_url,
                        stack.localnet,
                        data_dir,
                        custom_secret=settings.jwt_secret is not None,
                        operator=(settings.slack_oncall or (local_operator(),))[0],
                    ),
                    flush=True,
                )
                await wait_for_signal()
                _say("stopping")
            finally:
                path.unlink(missing_ok=True)
    return 0
