"""Typed keys for what the aiohttp app carries."""

from __future__ import annotations

from aiohttp import web

from api.auth import TokenVerifier
from core.services import Services

SERVICES = web.AppKey("services", Services)
TOKENS = web.AppKey("tokens", TokenVerifier)
REQUEST_ID = web.RequestKey("request_id", str)
