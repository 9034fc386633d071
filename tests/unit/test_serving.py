"""payops/serving.py: the one way `payops serve` and `payops up` serve an application."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from core.errors import ConfigError
from payops.serving import listening, run_loop, wait_for_signal


def _hello_app(events: list[str]) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("cleaned up")

    app = web.Application()
    app.router.add_get("/", hello)
    app.cleanup_ctx.append(lifetime)
    return app


async def test_listening_serves_the_app_on_the_url_it_yields_then_cleans_up() -> None:
    events: list[str] = []
    async with aiohttp.ClientSession() as http:
        async with listening(_hello_app(events), "127.0.0.1", 0) as urls:
            assert events == ["started"]
            async with http.get(urls[0]) as resp:
                assert await resp.text() == "hello"
        assert events == ["started", "cleaned up"]
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(urls[0])


async def test_listening_cleans_up_the_app_when_its_port_is_taken() -> None:
    events: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"address already in use.*PAYOPS_HTTP_PORT"):
            async with listening(_hello_app(events), "127.0.0.1", port):
                pytest.fail("served on a port another socket holds")
    assert events == ["started", "cleaned up"]


async def test_wait_for_signal_returns_on_sigterm() -> None:
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(wait_for_signal())
    try:
        await asyncio.sleep(0)  # the task installs its handlers before its first await
        # Never raise SIGTERM without the loop's handler: it would end the test run.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(waiting, timeout=5)
    finally:
        waiting.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _loop_module() -> int:
    return 1 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 0


def test_run_loop_uses_uvloop_only_when_asked() -> None:
    pytest.importorskip("uvloop")
    assert run_loop(_loop_module(), "uvloop") == 1
    assert run_loop(_loop_module(), "asyncio") == 0


_WORKERS_SCRIPT = """
import asyncio, gc, os, sys
from aiohttp import web
from payops.serving import run_workers, serve_app, shared_port

async def pid(request):
    return web.Response(text=str(os.getpid()))

async def frozen(request):
    return web.Response(text=str(gc.get_freeze_count()))

def serve(number, port):
    app = web.Application()
    app.router.add_get("/", pid)
    app.router.add_get("/frozen", frozen)
    asyncio.run(serve_app(app, "127.0.0.1", port, worker=number))
    return 0

port, holder = shared_port("127.0.0.1", 0)
sys.exit(run_workers(2, lambda n: serve(n, port)))
"""


async def test_workers_share_one_port_and_stop_together() -> None:
    import json
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WORKERS_SCRIPT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    lines = [json.loads(await proc.stdout.readline()) for _ in range(2)]
    assert sorted(line["worker"] for line in lines) == [0, 1]
    assert lines[0]["addresses"] == lines[1]["addresses"]
    url = lines[0]["addresses"][0]
    pids: set[str] = set()
    for _ in range(40):  # the kernel spreads new connections across both
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            pids.add(await resp.text())
        if len(pids) == 2:
            break
    assert len(pids) == 2
    # What start-up made is out of the collector's way once serving (`serve_app`).
    async with aiohttp.ClientSession() as http, http.get(url + "/frozen") as resp:
        assert int(await resp.text()) > 1_000
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_a_worker_that_exits_stops_the_others() -> None:
    import sys

    script = _WORKERS_SCRIPT.replace(
        "def serve(number, port):", "def serve(number, port):\n    if number == 1: return 3"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(proc.wait(), 20) == 3
