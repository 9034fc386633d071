"""A local chain whose clock runs behind the wall clock, for block times before an intent.

    python -m tests.e2e.lagging_chain --host 127.0.0.1 --port 0 --lag-seconds 3600

The local chain's time only moves forward (`surfnet_timeTravel`), and it starts at the wall
clock, so a payment can never carry a block time earlier than an intent created afterwards —
unless the chain's clock lags, as a real cluster's stake-weighted block time can. This is the
same server as `python -m localnet` (same seed, same JSON info on stdout, same JSON-RPC),
built on a `LocalChain` whose wall clock is `time.time() - lag`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Sequence

from localnet.chain import LocalChain
from localnet.server import start_localnet


async def serve(host: str, port: int, lag_seconds: float) -> None:
    chain = LocalChain(wall=lambda: time.time() - lag_seconds)
    runner, info = await start_localnet(host, port, chain=chain)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(json.dumps(info.to_json(), indent=2), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.lagging_chain")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lag-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.lag_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
