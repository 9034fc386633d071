"""A Solana JSON-RPC reverse proxy on 127.0.0.1 that injects the faults of a real node.

It sits between `payops serve` (its `PAYOPS_SOLANA_RPC_URL`) and the local chain, and runs
in the test's own event loop, so the test decides, request by request, what the service sees:

- a **schedule**: a fault per transaction signature (`schedule`), applied to every request
  that names that signature (`getTransaction`, `getSignatureStatuses`) while `enabled`;
- a **rate**: with probability `rate` any request (any method) gets one of `rate_kinds`,
  drawn from a seeded random generator so a failing run can be replayed;
- **hold**: every `getTransaction` waits at the proxy until `release()` — a verify provably
  in flight at the RPC.

A JSON-RPC batch (several calls in one request) is one request here: the schedule does not
apply to it, the rate does (a transport fault for the whole request; a transient JSON-RPC
error answers each call), and its sizes are recorded (`batches`).

The faults (`Kind`): an answer slower than the service's RPC timeout, 429 with Retry-After,
HTTP 500/502/503, bodies that are no JSON-RPC answer, a transient JSON-RPC error, a dropped
connection, and a transaction whose view changes between commitments (seen `confirmed` by
`getSignatureStatuses` — succeeded or failed — while `getTransaction` at `finalized` has
nothing; finalized by its status while `getTransaction` has nothing yet; or gone from the
node altogether).

Everything it did is counted (`injected` by kind, `forwarded` by method), and every
`getTransaction` it saw is recorded with the commitment and options the service asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web


class Kind(enum.StrEnum):
    SLOW = "slow"  # the real answer, after the service's RPC timeout
    RATE_LIMITED = "http_429"  # 429 with Retry-After
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    GARBAGE = "garbage"  # 200 with a body that is no JSON-RPC answer (variants rotate)
    RPC_ERROR = "rpc_error"  # JSON-RPC -32005 "node is unhealthy" (transient)
    DROP = "drop"  # the connection closed without an answer
    NOT_FINAL = "not_final"  # confirmed (succeeded), nothing at finalized yet
    NOT_FINAL_FAILED = "not_final_failed"  # confirmed with an error, nothing at finalized
    VANISHED = "vanished"  # the node knows nothing of it (a forked-off node)
    LAGGING = "lagging"  # its status is finalized, but getTransaction has nothing yet


# What a verify must answer (202, this reason) while its signature's fault lasts.
TRANSPORT_KINDS: Final = (
    Kind.SLOW,
    Kind.RATE_LIMITED,
    Kind.HTTP_500,
    Kind.HTTP_502,
    Kind.HTTP_503,
    Kind.GARBAGE,
    Kind.RPC_ERROR,
    Kind.DROP,
)
COMMITMENT_KINDS: Final = (Kind.NOT_FINAL, Kind.NOT_FINAL_FAILED, Kind.VANISHED, Kind.LAGGING)
EXPECTED_REASON: Final[dict[Kind, str]] = {
    **dict.fromkeys(TRANSPORT_KINDS, "rpc_unavailable"),
    Kind.NOT_FINAL: "tx_not_final",
    Kind.NOT_FINAL_FAILED: "tx_not_final",
    Kind.VANISHED: "tx_not_found",
    Kind.LAGGING: "tx_not_found",
}
# A failed instruction as a node reports it in a signature status and in `meta.err`.
FAILED: Final = {"InstructionError": [2, {"Custom": 1}]}
_GARBAGE: Final = (
    (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    (b'{"jsonrpc":"2.0","result":{"slot":4', "application/json"),  # cut short
    (b"", "application/json"),
    (b'{"jsonrpc":"2.0","id":1}', "application/json"),  # neither result nor error
    (b'{"jsonrpc":"2.0","id":1,"result":"ok"}', "application/json"),  # wrong result shape
    (b"[]", "application/json"),
)


@dataclass(frozen=True)
class SeenGetTransaction:
    signature: str
    config: dict[str, Any]
    at: float  # loop time


@dataclass
class FaultyRpc:
    """The proxy's controls and its record; see the module docstring."""

    upstream: str
    slow_seconds: float = 1.6  # above the service's PAYOPS_RPC_TIMEOUT_SECONDS in the tests
    retry_after: int = 1
    url: str = ""
    enabled: bool = False
    schedule: dict[str, Kind] = field(default_factory=dict)
    rate: float = 0.0
    rate_kinds: Sequence[Kind] = TRANSPORT_KINDS
    rng: random.Random = field(default_factory=lambda: random.Random(7305))
    holding: bool = False
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    seen: list[SeenGetTransaction] = field(default_factory=list)
    passed: set[str] = field(default_factory=set)  # signatures whose getTransaction went through
    held: int = 0  # getTransaction requests waiting at the proxy right now
    batches: list[int] = field(default_factory=list)  # the size of each batch request
    batch_faults: int = 0  # faults injected into batch requests
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _garbage: itertools.count[int] = field(default_factory=itertools.count)
    _session: aiohttp.ClientSession | None = None

    # --- controls ---------------------------------------------------------------------------

    def inject(self, schedule: dict[str, Kind] | None = None, *, rate: float = 0.0) -> None:
        """Faults on: `schedule` per signature, plus `rate` for any request."""
        self.schedule = dict(schedule or {})
        self.rate = rate
        self.enabled = True

    def heal(self) -> None:
        """Pass everything through from now on (a held request stays held until `release`)."""
        self.enabled = False
        self.schedule = {}
        self.rate = 0.0

    def hold(self) -> None:
        self._released.clear()
        self.holding = True

    def release(self) -> None:
        self.holding = False
        self._released.set()

    def arrivals(self, signature: str) -> list[float]:
        return [s.at for s in self.seen if s.signature == signature]

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    # --- the proxy ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, list) and payload:
            return await self._batch(request, body, payload)
        if not isinstance(payload, dict):
            return await self._forward(body, "unparsed")
        method = str(payload.get("method"))
        params = payload.get("params") or []
        signature = self._signature_of(method, params)
        if method == "getTransaction" and signature is not None:
            config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
            self.seen.append(
                SeenGetTransaction(signature, dict(config), asyncio.get_running_loop().time())
            )
            if self.holding:
                self.held += 1
                try:
                    await self._released.wait()
                finally:
                    self.held -= 1
        kind = self._choose(method, signature)
        if kind is None:
            if method == "getTransaction" and signature is not None:
                self.passed.add(signature)
            return await self._forward(body, method)
        self.injected[kind.value] += 1
        return await self._inject(kind, request, body, payload, method, signature)

    async def _batch(
        self, request: web.Request, body: bytes, calls: list[Any]
    ) -> web.StreamResponse:
        self.batches.append(len(calls))
        now = asyncio.get_running_loop().time()
        fetched = []
        for call in calls:
            params = (call.get("params") or []) if isinstance(call, dict) else []
            method = str(call.get("method")) if isinstance(call, dict) else ""
            signature = self._signature_of(method, params)
            if method == "getTransaction" and signature is not None:
                config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
                self.seen.append(SeenGetTransaction(signature, dict(config), now))
                fetched.append(signature)
        kind = self._choose("batch", None)
        if kind is None:
            self.passed.update(fetched)
            return await self._forward(body, "batch")
        self.injected[kind.value] += 1
        self.batch_faults += 1
        if kind is Kind.RPC_ERROR:
            error = {"code": -32005, "message": "Node is unhealthy", "data": {}}
            return web.json_response(
                [{"jsonrpc": "2.0", "id": c.get("id"), "error": error} for c in calls]
            )
        return await self._inject(kind, request, body, {}, "batch", None)

    @staticmethod
    def _signature_of(method: str, params: list[Any]) -> str | None:
        if method == "getTransaction" and params and isinstance(params[0], str):
            return params[0]
        if method == "getSignatureStatuses" and params and isinstance(params[0], list):
            first = params[0][0] if params[0] else None
            return first if isinstance(first, str) else None
        return None

    def _choose(self, method: str, signature: str | None) -> Kind | None:
        if not self.enabled:
            return None
        if signature is not None and signature in self.schedule:
            return self.schedule[signature]
        if self.rate > 0 and self.rng.random() < self.rate:
            kind = self.rng.choice(list(self.rate_kinds))
            if kind in COMMITMENT_KINDS and method not in (
                "getTransaction",
                "getSignatureStatuses",
            ):
                return None  # a commitment view only means something for these two
            return kind
        return None

    async def _inject(
        self,
        kind: Kind,
        request: web.Request,
        body: bytes,
        payload: dict[str, Any],
        method: str,
        signature: str | None,
    ) -> web.StreamResponse:
        rpc_id = payload.get("id")
        if kind is Kind.SLOW:
            await asyncio.sleep(self.slow_seconds)  # the service gave up: nobody reads this
            return await self._forward(body, method)
        if kind is Kind.RATE_LIMITED:
            return web.json_response(
                {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": 429, "message": "Too many"}},
                status=429,
                headers={"Retry-After": str(self.retry_after)},
            )
        if kind in (Kind.HTTP_500, Kind.HTTP_502, Kind.HTTP_503):
            return web.Response(
                status=int(kind.value.removeprefix("http_")), text="upstream says no"
            )
        if kind is Kind.GARBAGE:
            text, content_type = _GARBAGE[next(self._garbage) % len(_GARBAGE)]
            return web.Response(body=text, content_type=content_type)
        if kind is Kind.RPC_ERROR:
            error = {"code": -32005, "message": "Node is unhealthy", "data": {}}
            return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "error": error})
        if kind is Kind.DROP:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        # The transaction's view differs between commitments.
        if method == "getTransaction":
            # The service asks at `finalized` (asserted by the tests), where it is not yet.
            return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "result": None})
        if method == "getSignatureStatuses" and kind is not Kind.LAGGING:
            answer = await self._upstream_json(body)
            value = answer.get("result", {}).get("value")
            if isinstance(value, list) and value:
                value[0] = _status_view(kind, value[0])
            return web.json_response(answer)
        return await self._forward(body, method)

    async def _forward(self, body: bytes, method: str) -> web.Response:
        self.forwarded[method] += 1
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as upstream:
            content = await upstream.read()
            return web.Response(
                body=content, status=upstream.status, content_type="application/json"
            )

    async def _upstream_json(self, body: bytes) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as upstream:
            return dict(await upstream.json())


def _status_view(kind: Kind, status: dict[str, Any] | None) -> dict[str, Any] | None:
    """The signature status a node whose view is `kind` reports."""
    if kind is Kind.VANISHED or status is None:
        return None
    view = dict(status, confirmationStatus="confirmed", confirmations=3)
    if kind is Kind.NOT_FINAL_FAILED:
        view["err"] = FAILED
        view["status"] = {"Err": FAILED}
    return view


@contextlib.asynccontextmanager
async def running_faulty_rpc(upstream: str, **options: Any) -> AsyncIterator[FaultyRpc]:
    """The proxy on 127.0.0.1 (a free port) in front of `upstream`, healed, until exit."""
    proxy = FaultyRpc(upstream, **options)
    app = web.Application()
    app.router.add_post("/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        proxy._session = session
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            proxy.url = f"http://{host}:{port}"
            yield proxy
        finally:
            proxy.release()  # nothing stays parked on the event
            await runner.cleanup()


__all__ = [
    "COMMITMENT_KINDS",
    "EXPECTED_REASON",
    "FAILED",
    "TRANSPORT_KINDS",
    "FaultyRpc",
    "Kind",
    "SeenGetTransaction",
    "running_faulty_rpc",
]
