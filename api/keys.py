"""Typed keys for what the aiohttp app carries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.services import Services

if TYPE_CHECKING:  # api.auth reads TOKENS: importing it here at run time would be a cycle
    from api.auth import TokenVerifier

SERVICES = web.AppKey("services", Services)
TOKENS: web.AppKey[TokenVerifier] = web.AppKey("tokens")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
REQUEST_ID = web.RequestKey("request_id", str)
