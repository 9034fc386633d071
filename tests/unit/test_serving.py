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
