"""Unauthenticated routes: the gate status for the frontend, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.http import json_response
from api.keys import SERVICES
from api.openapi import openapi_document
from api.schemas import HealthBody, StatusBody, SwitchBody
from core.gate import Switch

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
    return json_response(
        HealthBody(status="ok" if ok else "unavailable", checks=checks), status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    gate = await svc.gate.state()
    svc.metrics.gate_open.labels("verify").set(int(gate.verify.is_open))
    svc.metrics.gate_open.labels("client_retries").set(int(gate.client_retries.is_open))
    body = generate_latest(svc.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status", status, name="status")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/openapi.json", openapi, name="openapi")
