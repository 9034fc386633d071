"""The RPC client's CPU per `getTransaction`, calls on their own against JSON-RPC batches.

    python -m bench.rpc_batch                 # 4,000 calls per case, 4 and 8 at once
    python -m bench.rpc_batch --calls 2000 --together 2,4,8,16

A node on 127.0.0.1 in a child process (so that its CPU is not counted) answers every
`getTransaction` with a captured mainnet answer (`tests/fixtures/solana`, 8.7 kB). This
process runs payops' own client (`SolanaRpc`, no cache) on uvloop and asks for `together`
transactions at once, again and again: with `max_batch` 1 each is its own HTTP request, with
`max_batch` 10 the calls made together leave as one batch. It prints this process's CPU per
call (the JSON-RPC exchange and parsing the answer) and the wall time per call, each case
twice, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from core.chain.rpc import SolanaRpc

FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "tests/fixtures/solana/keyapp_validGetSendSPLTransactionResponse_jsonParsed.json"
)


def serve() -> None:
    """The node: every call answered with the captured result; prints its port."""
    captured = json.loads(FIXTURE.read_text())
    result = captured.get("result", captured)

    def answer(call: dict[str, object]) -> dict[str, object]:
        return {"jsonrpc": "2.0", "id": call["id"], "result": result}

    async def handle(request: web.Request) -> web.Response:
        payload = await request.json()
        body = [answer(c) for c in payload] if isinstance(payload, list) else answer(payload)
        return web.json_response(body)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def measure(url: str, max_batch: int, together: int, calls: int) -> tuple[float, float]:
    """(CPU µs per call, wall µs per call)."""
    async with SolanaRpc(url, max_batch=max_batch, cache_size=0, max_concurrency=32) as rpc:
        await rpc.get_transaction("warm-up")
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, calls, together):
            names = [f"s{n}" for n in range(start, start + together)]
            await asyncio.gather(*(rpc.get_transaction(name) for name in names))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1e6 / calls, wall * 1e6 / calls


async def run(url: str, calls: int, levels: list[int]) -> None:
    for together in levels:
        for _ in range(2):
            for max_batch in (1, 10):
                cpu, wall = await measure(url, max_batch, together, calls)
                print(
                    f"{together:>3} at once, max_batch {max_batch:>2}: "
                    f"CPU {cpu:6.1f} µs per call, wall {wall:6.1f} µs per call",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--together", default="4,8", help="calls at once (default 4,8)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    node = subprocess.Popen(
        [sys.executable, "-m", "bench.rpc_batch", "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert node.stdout is not None
        port = int(node.stdout.readline())
        levels = [int(n) for n in args.together.split(",")]
        import uvloop

        uvloop.run(run(f"http://127.0.0.1:{port}/", args.calls, levels))
    finally:
        node.terminate()
        node.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
