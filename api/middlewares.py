"""Request id, access log, metrics and errors -> JSON, for every route."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from api.http import error_response, json_response
from api.keys import REQUEST_ID, SERVICES
from core import logs
from core.errors import PayopsError, Unavailable
from core.logs import bind

log = logging.getLogger("payops.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"  # a client's X-Request-Id is kept if it matches
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)

# A dead or restarting database is "try again", never a 500 and never a partial write.
DATABASE_DOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A pooled connection the server has just terminated, handed out before asyncpg saw the
    # socket close: its protocol is still consuming the FATAL error ("cannot switch to
    # state ...; another operation (2) is in progress"). The pool discards it on release.
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
    TimeoutError,
)


# Methods a client names become a metric label: any other is counted as OTHER, so a client
# cannot mint label values (one time series each) by inventing methods.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_name(request: web.Request) -> str:
    """The runbook's route name (`purchase-intents`, `credits`, ...) for logs and metrics."""
    name = request.match_info.route.name
    return name.split(".", 1)[0] if name else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    # 32 random hex digits, as uuid4().hex without building a UUID on every request
    request_id = incoming if _REQUEST_ID.match(incoming) else os.urandom(16).hex()
    request[REQUEST_ID] = request_id
    route = route_name(request)
    started = time.perf_counter()
    status = 500
    with bind(request_id=request_id, route=route):
        try:
            response = await _errors_to_json(request, handler)
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        finally:
            elapsed = time.perf_counter() - started
            method = request.method if request.method in METHODS else "OTHER"
            request.app[SERVICES].metrics.http_request(route, method, status, elapsed)
            logs.info(
                log,
                f"{request.method} {request.path} {status}",
                {"status": status, "duration_ms": round(elapsed * 1000, 2)},
            )


async def _errors_to_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PayopsError as exc:
        if exc.code not in ("missing_token",):
            log.info("refused: %s", exc.code, extra={"error_code": exc.code})
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = {404: "route_not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
                exc.status, "http_error"
            )
            # Keep what HTTP requires of the answer, e.g. `Allow` on a 405 (RFC 9110).
            kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            return json_response(
                {"error": {"code": code, "message": exc.reason}}, status=exc.status, headers=kept
            )
        raise
    except DATABASE_DOWN as exc:
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(
            Unavailable("the database is unavailable; retry shortly", code="database_unavailable")
        )
    except Exception:
        log.exception("unhandled error")
        return json_response(
            {"error": {"code": "internal_error", "message": "internal error"}}, status=500
        )
