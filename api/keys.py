"""Typed keys for what the aiohttp app carries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.services import Services

if TYPE_CHECKING:  # api.auth reads TOKENS: importing it here at run time would be a cycle
    from api.auth import TokenVerifier
    from api.routes_ops import OpsRunner

SERVICES = web.AppKey("services", Services)
TOKENS: web.AppKey[TokenVerifier] = web.AppKey("tokens")
# The runbook's commands for POST /v1/ops/{command}; set by the composition root.
OPS_RUNNER: web.AppKey[OpsRunner] = web.AppKey("ops_runner")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
REQUEST_ID = web.RequestKey("request_id", str)
