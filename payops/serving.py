"""Serving an aiohttp application: the event loop, the listening socket, the signal wait.

`payops serve` and `payops up` serve the same way: one `AppRunner` that leaves signals to
us (so a SIGTERM lets in-flight requests finish within `SHUTDOWN_TIMEOUT_SECONDS` before the
app's cleanup runs), no access log (the API logs each request itself), cleaned up whatever
happens after `setup()`, even when the port cannot be bound.

`payops serve --workers N` forks N processes before any event loop exists, each a whole
service (its loop, pool, RPC client, jobs) listening on the same port with `SO_REUSEPORT`:
the kernel spreads new connections across them. The parent only forwards SIGINT/SIGTERM and
waits; when one worker exits, it stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
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
    app: web.Application,
    host: str,
    port: int,
    *,
    change_with: str = "PAYOPS_HTTP_PORT",
    reuse_port: bool = False,
) -> AsyncIterator[list[str]]:
    """`app` served on `host:port` (0 = any free port) inside the block; yields the URLs
    it listens on. On exit, waits for in-flight requests, then runs the app's cleanup.
    An address that cannot be bound is a `ConfigError` naming `change_with`. `reuse_port`:
    share the port with the other workers (`SO_REUSEPORT`)."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, access_log=None
    )
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        except OSError as exc:
            if not cannot_bind(exc):
                raise
            raise port_taken(host, port, exc, change_with) from exc
        yield [f"http://{address[0]}:{address[1]}" for address in runner.addresses]
    finally:
        await runner.cleanup()


async def serve_app(
    app: web.Application, host: str, port: int, *, worker: int | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, announcing the addresses as one JSON line on stdout.
    `worker`: this process is that worker of `run_workers` (the port is shared)."""
    async with listening(app, host, port, reuse_port=worker is not None) as urls:
        # What start-up made (modules, the app, the pool, caches) lives as long as the
        # process: frozen, a full collection walks only what requests made since, instead of
        # pausing every request in flight for tens of milliseconds to walk all of it again.
        gc.collect()
        gc.freeze()
        line: dict[str, object] = {"event": "listening", "addresses": urls}
        if worker is not None:
            line["worker"] = worker
        # One write: the workers share stdout, and their lines must not interleave.
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await wait_for_signal()


def shared_port(host: str, port: int) -> tuple[int, socket.socket | None]:
    """The port the workers share. For port 0, a free port is chosen here and held by a
    bound, never listening `SO_REUSEPORT` socket (it receives no connection) until the
    workers have stopped, so nothing else takes it meanwhile."""
    if port != 0:
        return port, None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, 0))
    return int(holder.getsockname()[1]), holder


def run_workers(workers: int, serve: Callable[[int], int]) -> int:
    """Fork `workers` processes, each running `serve(worker number)` (which must start its
    own event loop: nothing async may run in the parent before this). Forwards SIGINT and
    SIGTERM to them and waits; when one exits, the others are stopped. Returns the first
    non-zero exit status, else 0."""
    children: dict[int, int] = {}
    for number in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = serve(number)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:
                print(f"payops serve: worker {number}: {exc!r}", file=sys.stderr, flush=True)
            finally:
                logging.shutdown()  # the log lines of the last turn (core/logs.TurnHandler)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = number

    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            if pid not in children:
                continue
            children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if code != 0 and status == 0:
                status = code if code > 0 else 128 - code
            if not stopping:
                stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
