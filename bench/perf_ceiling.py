"""The HTTP ceiling: a bare aiohttp + asyncpg server that runs only the credit's SQL.

    python -m bench.perf_ceiling DSN MIRROR USERS [uvloop]

`POST /credit/{n}` credits synthetic intent `n` (of `USERS` users) with the credit's SQL
(`MIRROR`, one of `bench.perf_sql.MIRRORS`) in one transaction on a pool sized like the
service's, and answers `{"balance": ...}`. No auth, no JSON body, no chain, no logging, no
metrics: what is left is what any HTTP service doing this credit on this stack must pay.
Prints `{"port": ...}` once listening on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import asyncpg
from aiohttp import web

from bench.perf_sql import MIRRORS, Mirror, json_body
from bench.perf_stack import pool_size
from core import db

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
MIRROR: web.AppKey[Mirror] = web.AppKey("mirror", Mirror)
USERS: web.AppKey[int] = web.AppKey("users", int)


async def credit(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    async with request.app[POOL].acquire() as conn, conn.transaction():
        balance = await request.app[MIRROR].credit(conn, n, request.app[USERS])
    return web.Response(body=json_body({"balance": balance}), content_type="application/json")


async def serve(dsn: str, mirror: Mirror, users: int) -> None:
    pool = await db.create_pool(dsn, min_size=pool_size(), max_size=pool_size())
    app = web.Application()
    app[POOL] = pool
    app[MIRROR] = mirror
    app[USERS] = users
    app.router.add_post("/credit/{n}", credit)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    server = serve(args[0], MIRRORS[args[1]], int(args[2]))
    if args[3:] == ["uvloop"]:
        import uvloop

        uvloop.run(server)
    else:
        asyncio.run(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
