"""What `bench.detect` runs against: the local chain counting the service's JSON-RPC calls by
method, `payops serve` with its scheduler on, the bench users' tokens, and the abandoned
intents a phase starts with."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from solders.keypair import Keypair

from bench import perf_stack
from bench.perf_stack import JWT_SECRET, Child
from localnet.chain import LocalChain
from localnet.rpc import create_app, handle_rpc
from localnet.server import LocalnetInfo, seed_chain

# --- the chain, counting the service's requests ------------------------------------------------


@dataclass
class CountingChain:
    chain: LocalChain
    info: LocalnetInfo  # rpc_url: the path the bench (the wallet) uses
    service_url: str  # the path the service uses: counted
    counts: Counter[str] = field(default_factory=Counter)


@contextlib.asynccontextmanager
async def counting_chain() -> AsyncIterator[CountingChain]:
    chain = LocalChain()
    seeded = seed_chain(chain)
    counter: Counter[str] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/service":
            try:
                payload = json.loads(await request.read())
            except ValueError:
                payload = None
            calls = payload if isinstance(payload, list) else [payload]
            for call in calls:
                method = call.get("method") if isinstance(call, dict) else None
                counter[str(method)] += 1
        response: web.StreamResponse = await handler(request)
        return response

    app = create_app(chain)
    app.router.add_post("/service", handle_rpc)
    app.middlewares.append(count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        info = LocalnetInfo(**{**seeded.to_json(), "rpc_url": base})
        yield CountingChain(chain, info, base + "/service", counter)
    finally:
        await runner.cleanup()


# --- the service -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service(
    dsn: str, chain: CountingChain, work_dir: Path, **settings: str
) -> AsyncIterator[tuple[Child, str]]:
    """`payops serve` as the perf run starts it (`bench.perf_stack.service`), on the counting
    proxy, with the scheduler on: the watcher and the sweep run with it; reconciliation and
    the expiry job stay at their default intervals. `settings` go over it."""
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    info = replace(chain.info, rpc_url=chain.service_url)
    async with perf_stack.service(
        dsn,
        info,
        work_dir,
        log_level="WARNING",
        extra_env={"PAYOPS_SCHEDULER_ENABLED": "true", **settings},
    ) as running:
        yield running


def bearer(user: str) -> dict[str, str]:
    from api.auth import mint_token

    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, user)}"}


# --- the database ------------------------------------------------------------------------------


async def abandon(pool: asyncpg.Pool, template: dict[str, Any], n: int) -> None:
    """`n` PENDING intents made 10 minutes ago that nobody pays: copies of `template` (an
    intent the API made) with their own ids and fresh reference keys."""
    if n == 0:
        return
    refs = [str(Keypair().pubkey()) for _ in range(n)]
    await pool.execute(
        """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
               recipient, recipient_token_account, reference, memo, status, created_at,
               expires_at, updated_at)
           SELECT g.id, 'abandoned-' || (g.n % 1000), t.credits, t.amount, t.mint,
                  t.token_program, t.recipient, t.recipient_token_account, g.ref, g.id::text,
                  'PENDING', now() - interval '10 minutes',
                  now() - interval '10 minutes' + (t.expires_at - t.created_at), now()
           FROM purchase_intents t,
                (SELECT gen_random_uuid() AS id, r.ref, r.n
                 FROM unnest($2::text[]) WITH ORDINALITY AS r(ref, n)) g
           WHERE t.id = $1""",
        uuid.UUID(template["id"]),
        refs,
    )
    await pool.execute("ANALYZE purchase_intents")
