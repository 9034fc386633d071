"""A scripted JSON-RPC node on 127.0.0.1 for the RPC client's tests: real captured answers,
and the faults of a real node (rate limits, 5xx, slowness, garbage, errors, refusal)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fixtures import load_solana_fixture

SPL_FIXTURE = "keyapp_validGetSendSPLTransactionResponse_jsonParsed.json"
SIG = "2S2rTZjaqzxYRw9mnqzwtyqitKtSsnE8GVqLn1KrD5R2YpXZnU4GdjppsgfSAbrzJfaqadfi8CtrqEBy588WVQ3E"
OTHER_SIG = (
    "5QMfuqThWSMMpLCRe3tk7qn7iSwWKfJV8EvD1ZPvyqAWa7Z2JftZ4rPq8YCxCwzSykX7dMkDB8RrovQMoL9ZZWKY"
)
_UNSET: Any = object()
TX: dict[str, Any] = {"slot": 5, "transaction": {"signatures": [SIG]}, "meta": {"err": None}}
# SolanaRpc options for tests: failures found in milliseconds, not seconds
FAST: dict[str, Any] = {
    "timeout_seconds": 2.0,
    "max_retries": 2,
    "backoff_base_seconds": 0.01,
    "backoff_cap_seconds": 0.05,
}


def load_fixture_result(name: str) -> dict[str, Any]:
    """The `result` of a captured getTransaction response; fails the test if it is missing."""
    data = load_solana_fixture(name)
    return data["result"] if "jsonrpc" in data else data  # type: ignore[no-any-return]


@dataclass
class Reply:
    """One scripted answer: a JSON-RPC result or error, or a raw HTTP status/body."""

    result: Any = _UNSET
    error: dict[str, Any] | None = None
    status: int = 200
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    omit: bool = False  # in a batch: leave this call out of the answer


@dataclass
class FakeNode:
    """Answers from `script` in order, then from `results` by method.

    A batch (a JSON array of calls) takes a reply from `script` for the whole request when
    that reply is a raw body or a non-200 status, else one reply per call, in order; its
    answer lists the calls in reverse order when `reverse_batches` (JSON-RPC allows any
    order), and is `refuse_batches` when that is set (a node that takes no batches)."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every call, batched or not
    batches: list[int] = field(default_factory=list)  # the size of each batch request
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    reverse_batches: bool = False
    refuse_batches: Reply | None = None

    def methods(self) -> list[str]:
        return [r["method"] for r in self.requests]

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            payload = await request.json()
            if isinstance(payload, list):
                return await self._batch(payload)
            self.requests.append(payload)
            reply = self._next(payload)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.raw is not None:
                return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
            return web.json_response(
                self._envelope(payload, reply), status=reply.status, headers=reply.headers
            )
        finally:
            self.in_flight -= 1

    def _next(self, call: dict[str, Any]) -> Reply:
        if self.script:
            return self.script.pop(0)
        if call["method"] in self.results:
            return Reply(result=self.results[call["method"]])
        return Reply(error={"code": -32601, "message": "Method not found"})

    @staticmethod
    def _envelope(call: dict[str, Any], reply: Reply) -> dict[str, Any]:
        envelope: dict[str, Any] = {"jsonrpc": "2.0", "id": call["id"]}
        if reply.error is not None:
            envelope["error"] = reply.error
        else:
            envelope["result"] = None if reply.result is _UNSET else reply.result
        return envelope

    async def _batch(self, calls: list[dict[str, Any]]) -> web.Response:
        self.batches.append(len(calls))
        whole = self.refuse_batches
        if whole is None and self.script and (self.script[0].raw or self.script[0].status != 200):
            whole = self.script.pop(0)
        if whole is not None:
            await asyncio.sleep(whole.delay)
            if whole.raw is not None:
                return web.Response(status=whole.status, body=whole.raw, headers=whole.headers)
            envelope = self._envelope({"id": None}, whole)
            return web.json_response(envelope, status=whole.status, headers=whole.headers)
        self.requests.extend(calls)
        replies = [(call, self._next(call)) for call in calls]
        await asyncio.sleep(max(reply.delay for _, reply in replies))
        answers = [self._envelope(call, reply) for call, reply in replies if not reply.omit]
        return web.json_response(answers[::-1] if self.reverse_batches else answers)


@asynccontextmanager
async def running_node() -> AsyncIterator[FakeNode]:
    """A FakeNode served over HTTP on an ephemeral loopback port (its `url`)."""
    node = FakeNode()
    app = web.Application()
    app.router.add_post("/", node.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    node.url = str(server.make_url("/"))
    try:
        yield node
    finally:
        await server.close()


def refused_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
