"""Unauthenticated routes: the gate status for the frontend, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.http import json_response
from api.keys import OPENAPI, SERVICES
from api.routedoc import Answer, Raw, Route, RouteDoc
from api.schemas import HealthBody, StatusBody, SwitchBody
from core import watch
from core.gate import Switch
from core.services import Services

READY_TIMEOUT_SECONDS = 2.0


def _switch(s: Switch) -> SwitchBody:
    return SwitchBody(open=s.is_open, reason=s.reason, changed_at=s.changed_at)


async def status(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    gate = await svc.gate.state()
    return json_response(
        StatusBody(
            verify=_switch(gate.verify),
            client_retries=_switch(gate.client_retries),
            retry_verification=gate.verify.is_open and gate.client_retries.is_open,
        )
    )


async def healthz(request: web.Request) -> web.Response:
    return json_response(HealthBody(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await svc.pool.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if svc.chain_health is not None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                healthy = await svc.chain_health()
            checks["solana_rpc"] = "ok" if healthy else "unhealthy"
        except Exception as exc:
            checks["solana_rpc"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    # Informational: a lagging watcher is no reason to take a replica out of service (every
    # replica would go at once); it is a reason to look (docs/OPERATIONS.md).
    checks["treasury_watcher"] = await _watcher_state(svc)
    return json_response(
        HealthBody(status="ok" if ok else "unavailable", checks=checks), status=200 if ok else 503
    )


async def _watcher_state(svc: Services) -> str:
    if not svc.settings.watch_enabled:
        return "disabled"
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            behind = await watch.seconds_behind(svc)
    except Exception as exc:
        return f"unknown: {type(exc).__name__}"
    if behind is None:
        return "not started"
    if behind > svc.settings.watch_stale_seconds:
        return f"behind: last complete read {behind:.0f}s ago"
    return "ok"


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    gate = await svc.gate.state()
    svc.metrics.gate_open.labels("verify").set(int(gate.verify.is_open))
    svc.metrics.gate_open.labels("client_retries").set(int(gate.client_retries.is_open))
    body = generate_latest(svc.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


STATUS = RouteDoc(
    "getStatus",
    "The verify gate as the frontend must see it",
    database=True,
    answers=(Answer(200, "Gate state", StatusBody),),
)
HEALTHZ = RouteDoc("healthz", "Liveness", answers=(Answer(200, "Alive", HealthBody),))
# Readiness answers its own 503 (a HealthBody saying what is down), never the middleware's.
READYZ = RouteDoc(
    "readyz",
    "Readiness: database and Solana RPC (and, for information only, the treasury watcher)",
    answers=(Answer(200, "Ready", HealthBody), Answer(503, "Not ready", HealthBody)),
)
METRICS = RouteDoc(
    "metrics",
    "Prometheus metrics",
    database=True,  # the gate's state is read for its gauge
    answers=(Answer(200, "Prometheus text format", Raw("text/plain", {"type": "string"})),),
)
OPENAPI_DOC = RouteDoc(
    "openapi",
    "This document",
    answers=(Answer(200, "OpenAPI 3.1", Raw("application/json", {"type": "object"})),),
)

ROUTES = (
    Route("GET", "/v1/status", "status", status, STATUS),
    Route("GET", "/healthz", "healthz", healthz, HEALTHZ),
    Route("GET", "/readyz", "readyz", readyz, READYZ),
    Route("GET", "/metrics", "metrics", metrics, METRICS),
    Route("GET", "/openapi.json", "openapi", openapi, OPENAPI_DOC),
)
