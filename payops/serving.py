"""Serving an aiohttp application: the event loop, the listening socket, the signal wait.

`payops serve` and `payops up` serve the same way: one `AppRunner` that leaves signals to
us (so a SIGTERM lets in-flight requests finish within `SHUTDOWN_TIMEOUT_SECONDS` before the
app's cleanup runs), no access log (the API logs each request itself), cleaned up whatever
happens after `setup()`, even when the port cannot be bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from core.errors import ConfigError

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


def port_taken(host: str, port: int, exc: OSError, change_with: str) -> ConfigError:
    """The one-line error for an address that cannot be bound (in use, or not ours)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ConfigError(
        f"cannot listen on {host}:{port} ({reason.lower()}): stop what uses it or choose "
        f"another port with {change_with}"
    )


def cannot_bind(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, host: str, port: int, *, change_with: str = "PAYOPS_HTTP_PORT"
) -> AsyncIterator[list[str]]:
    """`app` served on `host:port` (0 = any free port) inside the block; yields the URLs
    it listens on. On exit, waits for in-flight requests, then runs the app's cleanup.
    An address that cannot be bound is a `ConfigError` naming `change_with`."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, access_log=None
    )
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            if not cannot_bind(exc):
                raise
            raise port_taken(host, port, exc, change_with) from exc
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
