"""`create_app(services)`: the aiohttp application of the HTTP API."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from api import routes_credits, routes_events, routes_intents, routes_ops, routes_system
from api.auth import TokenVerifier
from api.keys import OPENAPI, SERVICES, TOKENS
from api.middlewares import observe
from api.openapi import openapi_document
from api.ratelimit import LIMITS, Limits, TokenBuckets, limit_per_ip
from api.routedoc import add_routes
from core.services import Services

# Every route of the API: what `create_app` serves and what `/openapi.json` describes.
API_ROUTES = (
    *routes_intents.ROUTES,
    *routes_events.ROUTES,
    *routes_credits.ROUTES,
    *routes_system.ROUTES,
    *routes_ops.ROUTES,
)


@functools.cache
def api_document() -> dict[str, Any]:
    """The OpenAPI document of `API_ROUTES` (the same for every app: built once)."""
    return openapi_document(API_ROUTES)


def create_app(services: Services) -> web.Application:
    # aiohttp's own limit backs up the per-route one in read_json.
    s = services.settings
    app = web.Application(
        middlewares=[observe, limit_per_ip], client_max_size=services.settings.max_body_bytes
    )
    app[SERVICES] = services
    app[LIMITS] = Limits(
        per_ip=TokenBuckets(s.rate_limit_per_ip_per_second, s.rate_limit_per_ip_burst),
        per_user=TokenBuckets(s.rate_limit_per_user_per_second, s.rate_limit_per_user_burst),
        trusted_proxies=s.trusted_proxies,
    )
    app[TOKENS] = TokenVerifier(services.settings)
    app[OPENAPI] = api_document()
    routes_intents.setup(app)
    routes_events.setup(app, services)
    add_routes(app, API_ROUTES)
    return app
