"""Routes as records: the handler and its description, registered and documented together.

Each routes module lists its routes as `Route` records. `create_app` registers those records
and `/openapi.json` is built from the same records (api/openapi.py), so a route cannot be
served without a description. A description lists what the handler itself answers; what
every route can answer (rate limits, 405, 500, 401 when authenticated, 503 when the
database is down, 400/413 for a body) is added by api/openapi.py from the flags here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from api.schemas import ErrorBody

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Method = Literal["GET", "POST"]
HeaderName = Literal[
    "X-Request-Id",
    "Retry-After",
    "Idempotent-Replayed",
    "Allow",
    "WWW-Authenticate",
    "Cache-Control",
]


@dataclass(frozen=True, slots=True)
class Raw:
    """A body that is not a pydantic model (Prometheus text, the OpenAPI document)."""

    media_type: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """One status a route answers, with its body, error codes and response headers."""

    status: int
    description: str
    body: type[BaseModel] | Raw = ErrorBody
    codes: tuple[str, ...] = ()  # the `error.code` values of an error answer
    headers: tuple[HeaderName, ...] = ()


def error(status: int, *codes: str, headers: tuple[HeaderName, ...] = ()) -> Answer:
    return Answer(status, "Error", ErrorBody, codes, headers)


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: Literal["path", "header"]
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class RouteDoc:
    operation_id: str
    summary: str
    answers: tuple[Answer, ...]
    request: type[BaseModel] | None = None  # a JSON body read with `read_json`
    request_required: bool = True  # False: the route also takes no body at all
    params: tuple[Param, ...] = ()
    authenticated: bool = False  # a bearer JWT: 401 without a valid one
    database: bool = False  # reads the database: 503 database_unavailable when it is down


@dataclass(frozen=True, slots=True)
class Route:
    method: Method
    path: str
    name: str  # `<runbook route>.<action>`: the part before the dot labels logs and metrics
    handler: Handler
    doc: RouteDoc


def add_routes(app: web.Application, routes: Sequence[Route]) -> None:
    for route in routes:
        if route.method == "GET":
            # HEAD comes with GET (RFC 9110): the same answer without a body.
            app.router.add_get(route.path, route.handler, name=route.name)
        else:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)


IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 200},
    description="Same key and body: the same response; same key, other body: 422.",
)
