"""`create_app(services)`: the aiohttp application of the HTTP API."""

from __future__ import annotations

from aiohttp import web

from api import routes_credits, routes_intents, routes_system
from api.auth import TokenVerifier
from api.keys import SERVICES, TOKENS
from api.middlewares import observe
from api.ratelimit import LIMITS, Limits, TokenBuckets, limit_per_ip
from core.services import Services


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
        trust_forwarded_for=s.trust_forwarded_for,
    )
    app[TOKENS] = TokenVerifier(services.settings)
    routes_intents.add_routes(app)
    routes_credits.add_routes(app)
    routes_system.add_routes(app)
    return app
