"""What a benchmark run starts: the embedded PostgreSQL, the local chain (in this process),
and the service and the HTTP ceiling as processes of their own.

The PostgreSQL server keeps the service's durability defaults (fsync, synchronous_commit and
full_page_writes on, as `payops up` runs it); only max_connections is raised, so pgbench's 64
connections fit beside the two HTTP servers' pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from api.auth import mint_token
from core.config import Settings
from core.embedded_db import EmbeddedPostgres
from localnet.chain import LocalChain
from localnet.rpc import create_app
from localnet.server import LocalnetInfo, seed_chain

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_CONNECTIONS = 250
START_SECONDS = 60.0
JWT_SECRET = "payops-bench-only-" + "0123456789abcdef" * 2


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointed at database `name` (host and unix-socket DSNs alike)."""
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


def socket_dir(dsn: str) -> str:
    """The unix-socket directory of an embedded server's DSN (`...?host=/dir`)."""
    _, _, query = dsn.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    return params["host"]


# --- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class Database:
    server: EmbeddedPostgres
    admin_dsn: str

    @property
    def bin_dir(self) -> Path:
        return self.server.bin_dir

    @property
    def pgdata(self) -> Path:
        return self.server.pgdata

    async def settings(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            names = (
                "server_version",
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "wal_sync_method",
                "shared_buffers",
                "max_connections",
            )
            rows = await conn.fetch(
                "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name",
                list(names),
            )
        finally:
            await conn.close()
        return {r["name"]: r["value"] for r in rows}

    async def create(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)


@contextlib.asynccontextmanager
async def database(work_dir: Path) -> AsyncIterator[Database]:
    """An embedded server in `work_dir/pg`, with room for pgbench's connections."""
    pgdata = work_dir / "pg"
    first = EmbeddedPostgres(pgdata)
    admin = await asyncio.to_thread(first.start_sync)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    finally:
        await conn.close()
    await asyncio.to_thread(first.stop_sync)  # max_connections needs a restart
    server = EmbeddedPostgres(pgdata, delete_on_stop=True)
    admin = await asyncio.to_thread(server.start_sync)
    try:
        yield Database(server, admin)
    finally:
        await asyncio.to_thread(server.stop_sync)


# --- the local chain -------------------------------------------------------------------------


@dataclass
class Chain:
    chain: LocalChain
    info: LocalnetInfo
    requests: list[int]  # [count]: JSON-RPC HTTP requests the chain has answered


@contextlib.asynccontextmanager
async def local_chain() -> AsyncIterator[Chain]:
    """The local chain on 127.0.0.1, in this process, counting the requests it answers.

    (What `localnet.server.start_localnet` does, plus the counter: every RPC request the
    service makes is one HTTP request here, so the count is the service's RPC traffic.)"""
    chain = LocalChain()
    seeded = seed_chain(chain)
    counter = [0]

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        counter[0] += 1
        response: web.StreamResponse = await handler(request)
        return response

    app = create_app(chain)
    app.middlewares.append(count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        info = LocalnetInfo(**{**seeded.to_json(), "rpc_url": f"http://127.0.0.1:{port}"})
        yield Chain(chain, info, counter)
    finally:
        await runner.cleanup()


# --- child processes -------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, chars: int = 3000) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return f"--- {self.name} stderr (last {chars} chars) ---\n{text[-chars:]}"

    async def first_json(self, within: float = START_SECONDS) -> dict[str, Any]:
        """The first JSON object the child prints on a line of its own."""
        async with asyncio.timeout(within):
            while True:
                for line in self.stdout.read_text(errors="replace").splitlines():
                    if line.startswith("{"):
                        with contextlib.suppress(ValueError):
                            return dict(json.loads(line))
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited early\n{self.tail()}")
                await asyncio.sleep(0.05)

    async def stop(self, within: float = 20.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


async def spawn(name: str, args: Sequence[str], work_dir: Path, env: Mapping[str, str]) -> Child:
    out, err = work_dir / f"{name}.stdout", work_dir / f"{name}.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=dict(env)
        )
    return Child(name, process, out, err)


def child_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's PAYOPS_/SLACK_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYOPS_", "SLACK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def service(
    dsn: str,
    chain: LocalnetInfo,
    work_dir: Path,
    *,
    log_level: str = "INFO",
    event_loop: str = "uvloop",
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> AsyncIterator[tuple[Child, str]]:
    """`payops serve` (the real service: its app, pool, RPC client, verifier, logs) against
    the bench database and the local chain; yields it and its base URL once /readyz is 200.
    The scheduler is off so that no recovery sweep verifies the prepared intents first; the
    pool has its default size, all of it opened at start. With `workers` above 1,
    `payops serve --workers N`, each worker with a pool of the default size divided by N
    (the same connections in all as one worker). `extra_env` overrides these settings (the
    watcher's run turns the scheduler on); `name` names its log files."""
    size = max(1, pool_size() // workers)
    env = child_env(
        PAYOPS_DATABASE_URL=dsn,
        PAYOPS_DATA_DIR=str(work_dir / "service-data"),
        PAYOPS_HTTP_HOST="127.0.0.1",
        PAYOPS_HTTP_PORT="0",
        PAYOPS_LOG_LEVEL=log_level,
        PAYOPS_EVENT_LOOP=event_loop,
        PAYOPS_SOLANA_RPC_URL=chain.rpc_url,
        PAYOPS_TOKEN_MINT=chain.mint,
        PAYOPS_TOKEN_PROGRAM=chain.token_program,
        PAYOPS_TOKEN_DECIMALS=str(chain.decimals),
        PAYOPS_TREASURY_OWNER=chain.treasury_owner,
        PAYOPS_TREASURY_TOKEN_ACCOUNT=chain.treasury_token_account,
        PAYOPS_JWT_SECRET=JWT_SECRET,
        PAYOPS_INTENT_TTL_SECONDS=str(6 * 3600),
        PAYOPS_SCHEDULER_ENABLED="false",
        # the load generator is one address and a few users: measure the service, not the limits
        PAYOPS_RATE_LIMIT_PER_IP_PER_SECOND="0",
        PAYOPS_RATE_LIMIT_PER_USER_PER_SECOND="0",
        # Its whole pool open from the start, as pgbench opens its connections first.
        PAYOPS_DB_POOL_MIN_SIZE=str(size),
        PAYOPS_DB_POOL_MAX_SIZE=str(size),
    )
    env.update(extra_env or {})
    args = [sys.executable, "-m", "payops.cli", "serve"]
    if workers > 1:
        args += ["--workers", str(workers)]
    name = name or ("service" if workers == 1 else f"service-w{workers}")
    child = await spawn(name, args, work_dir, env)
    try:
        listening = await child.first_json()
        url = str(listening["addresses"][0])
        await _wait_ready(url + "/readyz", child)
        await _all_listening(child, workers)
        yield child, url
    finally:
        code = await child.stop()
        if code != 0:
            print(f"warning: the service exited with {code}\n{child.tail()}", file=sys.stderr)


@contextlib.asynccontextmanager
async def ceiling(
    dsn: str, mirror: str, users: int, work_dir: Path, *, uvloop: bool = False
) -> AsyncIterator[tuple[Child, int]]:
    """`bench.perf_ceiling` on 127.0.0.1, crediting with `mirror` the synthetic intents of
    `users` users; yields it and its port."""
    args = [
        sys.executable,
        "-m",
        "bench.perf_ceiling",
        dsn,
        mirror,
        str(users),
        *(["uvloop"] if uvloop else []),
    ]
    child = await spawn("ceiling", args, work_dir, child_env())
    try:
        port = int((await child.first_json())["port"])
        yield child, port
    finally:
        await child.stop()


async def _all_listening(child: Child, workers: int) -> None:
    """Until each of the `workers` has printed its listening line."""
    async with asyncio.timeout(START_SECONDS):
        while child.stdout.read_text(errors="replace").count('"listening"') < workers:  # noqa: ASYNC110 (polls a file)
            await asyncio.sleep(0.05)


async def _wait_ready(url: str, child: Child) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(START_SECONDS):
        while True:
            if child.process.returncode is not None:
                raise RuntimeError(f"the service exited early\n{child.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


def pool_size() -> int:
    """The service's default pool size (`PAYOPS_DB_POOL_MAX_SIZE`): every pool in the bench
    has it, opened in full before anything is measured."""
    return int(Settings.model_fields["db_pool_max_size"].default)


def bearer(user: str) -> str:
    return mint_token(JWT_SECRET, user)
