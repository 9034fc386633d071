"""Serving an aiohttp application: the event loop, the listening socket, the signal wait.

`payops serve` and `payops up` serve the same way: one `AppRunner` that leaves signals to
us (so a SIGTERM lets in-flight requests finish within `SHUTDOWN_TIMEOUT_SECONDS` before the
app's cleanup runs), no access log (the API logs each request itself), cleaned up whatever
happens after `setup()`, even when the port cannot be bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

SHUTDOWN_TIMEOUT_SECONDS = 15.0


def run_loop(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Run `main` on uvloop when asked for and installed, else on asyncio's own loop."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform: the standard loop serves as well
            return asyncio.run(main)
        return uvloop.run(main)
    return asyncio.run(main)


@contextlib.asynccontextmanager
async def listening(app: web.Application, host: str, port: int) -> AsyncIterator[list[str]]:
    """`app` served on `host:port` (0 = any free port) inside the block; yields the URLs
    it listens on. On exit, waits for in-flight requests, then runs the app's cleanup."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield [f"http://{address[0]}:{address[1]}" for address in runner.addresses]
    finally:
        await runner.cleanup()


async def serve_app(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, announcing the addresses as one JSON line on stdout."""
    async with listening(app, host, port) as urls:
        print(json.dumps({"event": "listening", "addresses": urls}), flush=True)
        await wait_for_signal()


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
