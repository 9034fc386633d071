"""The real processes the end-to-end tests drive: the local chain and `payops serve`.

- `running_chain`: `python -m localnet` on an ephemeral port (port 0: the process binds it
  and prints the address in its `LocalnetInfo` JSON, so no port can be taken in between);
- `running_service`: `payops serve` against a fresh migrated database and that chain, ready
  once `/readyz` answers 200; stopped with SIGTERM, after which it must exit 0.

Child processes are in `procs`, the database facts the tests assert in `facts`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from api.auth import mint_token
from core import db
from localnet.server import LocalnetInfo
from localnet.wallet import Wallet

if TYPE_CHECKING:
    pass

from tests.e2e.procs import (
    POLL_SECONDS,
    START_SECONDS,
    Proc,
    ProcessFailed,
    child_env,
    read_json_output,
    spawn,
)

TOKEN_2022_FEE_BPS: Final = 100
JWT_SECRET: Final = "payops-e2e-tests-only-" + "0123456789abcdef" * 2


# --- the local chain ------------------------------------------------------------------------


@dataclass
class Chain:
    proc: Proc
    info: LocalnetInfo
    wallet: Wallet  # the seeded payer

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        return await self.wallet.call(method, params)

    async def send(
        self,
        instructions: Sequence[Instruction],
        signers: Sequence[Keypair] = (),
        *,
        skip_preflight: bool = False,
    ) -> str:
        """Sign `instructions` (fee paid by the payer, plus `signers`) and send them."""
        latest = await self.call("getLatestBlockhash", [{"commitment": "finalized"}])
        payer = self.info.payer_keypair()
        message = MessageV0.try_compile(
            payer.pubkey(), list(instructions), [], Hash.from_string(latest["value"]["blockhash"])
        )
        tx = VersionedTransaction(message, [payer, *signers])
        config = {"encoding": "base64", "skipPreflight": skip_preflight}
        return str(
            await self.call("sendTransaction", [base64.b64encode(bytes(tx)).decode(), config])
        )

    async def finalized(self, signature: str, *, ok: bool = True) -> dict[str, Any]:
        """Wait until `signature` is finalized; its status. `ok`: it must have succeeded."""
        status = await self.wallet.wait_finalized(signature)
        if ok:
            assert status["err"] is None, status
        return status

    async def wait_seen(self, signature: str, *, within: float = 10.0) -> dict[str, Any]:
        """Wait until the chain reports any status for `signature`; that status."""
        async with asyncio.timeout(within):
            while True:
                result = await self.call(
                    "getSignatureStatuses", [[signature], {"searchTransactionHistory": True}]
                )
                if result["value"][0] is not None:
                    return dict(result["value"][0])
                await asyncio.sleep(POLL_SECONDS)

    @property
    def port(self) -> int:
        port = urlsplit(self.info.rpc_url).port
        assert port is not None
        return port

    async def travel_to(self, unix_seconds: float) -> None:
        await self.call("surfnet_timeTravel", [{"absoluteTimestamp": int(unix_seconds * 1000)}])


@contextlib.asynccontextmanager
async def running_chain(
    workdir: Path,
    session: aiohttp.ClientSession,
    *,
    args: Sequence[str] = (),
    module: str = "localnet",
) -> AsyncIterator[Chain]:
    """`python -m <module> --host 127.0.0.1 --port 0 <args>`, stopped (SIGTERM) on exit."""
    command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args]
    proc = spawn("chain", command, workdir, child_env())
    try:
        info = LocalnetInfo(**await read_json_output(proc))
        yield Chain(proc, info, Wallet(info.rpc_url, info.payer_keypair(), session))
    finally:
        await proc.stop()


# --- the service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error.get("code") if isinstance(error, dict) else None


@dataclass
class Service:
    proc: Proc
    url: str
    chain: Chain
    pool: asyncpg.Pool  # the service's database, for the tests' own reads
    session: aiohttp.ClientSession

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(JWT_SECRET, user)}"}

    async def request(
        self, method: str, path: str, *, user: str | None = None, body: Any = None
    ) -> Answer:
        headers = self.auth(user) if user is not None else {}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            payload = await resp.json() if resp.content_type == "application/json" else None
            return Answer(resp.status, payload, dict(resp.headers))

    async def create_intent(self, user: str, credits: int = 5) -> dict[str, Any]:
        answer = await self.request(
            "POST", "/v1/purchase-intents", user=user, body={"credits": credits}
        )
        assert answer.status == 201, answer
        return dict(answer.body)

    async def verify(self, user: str, intent: Mapping[str, Any], signature: str) -> Answer:
        path = f"/v1/purchase-intents/{intent['id']}/verify"
        return await self.request("POST", path, user=user, body={"signature": signature})

    async def credits(self, user: str) -> dict[str, Any]:
        answer = await self.request("GET", "/v1/credits", user=user)
        assert answer.status == 200, answer
        return dict(answer.body)

    async def readyz(self) -> Answer:
        return await self.request("GET", "/readyz")


def service_env(
    info: LocalnetInfo, database_url: str, workdir: Path, **extra: str
) -> dict[str, str]:
    settings = {
        "PAYOPS_DATABASE_URL": database_url,
        "PAYOPS_DATA_DIR": str(workdir / "data"),
        "PAYOPS_HTTP_HOST": "127.0.0.1",
        "PAYOPS_HTTP_PORT": "0",  # the service binds a free port and prints it
        "PAYOPS_SOLANA_RPC_URL": info.rpc_url,
        "PAYOPS_TOKEN_MINT": info.mint,
        "PAYOPS_TOKEN_PROGRAM": info.token_program,
        "PAYOPS_TOKEN_DECIMALS": str(info.decimals),
        "PAYOPS_TREASURY_OWNER": info.treasury_owner,
        "PAYOPS_JWT_SECRET": JWT_SECRET,
        "PAYOPS_RPC_TIMEOUT_SECONDS": "1",
        "PAYOPS_RPC_MAX_RETRIES": "1",
        "PAYOPS_DB_POOL_MIN_SIZE": "1",
        "PAYOPS_LOG_LEVEL": "INFO",
        # The scheduler (recovery sweeps, reconciles) would act on other tests' intents.
        "PAYOPS_SCHEDULER_ENABLED": "false",
        # 100 concurrent verifies by one user from one address are the point of some tests.
        "PAYOPS_RATE_LIMIT_PER_IP_PER_SECOND": "0",
        "PAYOPS_RATE_LIMIT_PER_USER_PER_SECOND": "0",
    }
    settings.update(extra)
    return child_env(**settings)


async def wait_ready(service: Service, *, within: float = START_SECONDS) -> float:
    """Seconds until `service` answers /readyz 200; fails if it exits or takes longer."""
    started = time.monotonic()
    last: object = None
    try:
        async with asyncio.timeout(within):
            while True:
                if service.proc.popen.poll() is not None:
                    raise ProcessFailed(
                        f"payops serve exited with {service.proc.popen.returncode}\n"
                        + service.proc.tail()
                    )
                try:
                    answer = await service.readyz()
                except aiohttp.ClientError as exc:
                    last = exc
                else:
                    if answer.status == 200:
                        return time.monotonic() - started
                    last = answer
                await asyncio.sleep(POLL_SECONDS * 5)
    except TimeoutError:
        raise ProcessFailed(
            f"payops serve not ready within {within} s (last: {last!r})\n{service.proc.tail()}"
        ) from None


def running_service(
    chain: Chain,
    database_url: str,
    workdir: Path,
    session: aiohttp.ClientSession,
    *,
    serve_args: Sequence[str] = (),
    **settings: str,
) -> contextlib.AbstractAsyncContextManager[Service]:
    """`payops serve [serve_args]` on that chain and database; on exit SIGTERM, and it must
    exit 0 with clean logs."""
    return _service_process(
        chain, database_url, workdir, session, settings, killable=False, serve_args=serve_args
    )


def killable_service(
    chain: Chain,
    database_url: str,
    workdir: Path,
    session: aiohttp.ClientSession,
    **settings: str,
) -> contextlib.AbstractAsyncContextManager[Service]:
    """`running_service` that the test may SIGKILL: if it did, the process must have died of
    SIGKILL; if not, it stops as `running_service` does."""
    return _service_process(chain, database_url, workdir, session, settings, killable=True)


@contextlib.asynccontextmanager
async def _service_process(
    chain: Chain,
    database_url: str,
    workdir: Path,
    session: aiohttp.ClientSession,
    settings: Mapping[str, str],
    *,
    killable: bool,
    serve_args: Sequence[str] = (),
) -> AsyncIterator[Service]:
    env = service_env(chain.info, database_url, workdir, **settings)
    pool = await db.create_pool(database_url, min_size=1, max_size=4)
    proc = spawn(
        "service", [sys.executable, "-m", "payops.cli", "serve", *serve_args], workdir, env
    )
    try:
        listening = await read_json_output(proc)
        assert listening.get("event") == "listening", listening
        service = Service(proc, listening["addresses"][0], chain, pool, session)
        await wait_ready(service)
        yield service
        if killable and proc.popen.poll() is not None:
            assert proc.popen.returncode == -signal.SIGKILL, proc.tail()
        else:
            code = await proc.stop()
            assert code == 0, f"payops serve exited with {code} on SIGTERM\n{proc.tail()}"
            assert_clean_logs(proc)
    finally:
        if proc.popen.poll() is None:
            await proc.stop()
        await pool.close()


def assert_clean_logs(proc: Proc) -> None:
    """Every log line is JSON, none reports an error, and no secret was logged."""
    text = proc.stderr.read_text(errors="replace")
    assert JWT_SECRET not in text + proc.stdout.read_text(errors="replace")
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
        assert record.get("level") in ("debug", "info", "warning"), record


# --- starting several at once ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_stack(
    workdir: Path,
    session: aiohttp.ClientSession,
    database_url: str,
    *,
    chain_args: Sequence[str] = (),
    chain_module: str = "localnet",
    **settings: str,
) -> AsyncIterator[Service]:
    """A chain and a service on it."""
    async with (
        running_chain(workdir / "chain", session, args=chain_args, module=chain_module) as chain,
        running_service(chain, database_url, workdir / "service", session, **settings) as service,
    ):
        yield service


async def enter_concurrently(
    stack: contextlib.AsyncExitStack[bool | None],
    managers: Sequence[contextlib.AbstractAsyncContextManager[Service]],
) -> list[Service]:
    """Enter `managers` at the same time, and have `stack` exit them at the same time: a
    process spends its start-up importing Python modules, which the cores do side by side."""
    inner = [contextlib.AsyncExitStack() for _ in managers]

    async def close_all() -> None:
        results = await asyncio.gather(*(s.aclose() for s in inner), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    stack.push_async_callback(close_all)
    entered = await asyncio.gather(
        *(s.enter_async_context(m) for s, m in zip(inner, managers, strict=True)),
        return_exceptions=True,
    )
    services: list[Service] = []
    for result in entered:
        if isinstance(result, BaseException):
            raise result
        services.append(result)
    return services
