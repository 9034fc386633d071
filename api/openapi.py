"""The OpenAPI 3.1 document, built from the routes' own descriptions (api/routedoc.py).

A route describes what its handler answers; this module adds what the middlewares and the
shared helpers make every route answer, so no route repeats them:

- every route: 500 `internal_error`; 405 `method_not_allowed` with `Allow` for a method the
  path does not serve; `X-Request-Id` on every response;
- rate-limited paths (api/ratelimit.py): 429 `rate_limited` with `Retry-After`;
- authenticated routes: 401 with `WWW-Authenticate`;
- routes with a JSON body (api/http.py `read_json`): 400 and 413;
- routes that read the database: 503 `database_unavailable` with `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.middlewares import REQUEST_ID_PATTERN
from api.ratelimit import is_limited
from api.routedoc import Answer, HeaderName, Param, Raw, Route, error
from api.schemas import ErrorBody

REF = "#/components/schemas/{model}"

# name -> (always sent with the answers that list it, schema, description)
HEADERS: dict[HeaderName, tuple[bool, dict[str, Any], str]] = {
    "X-Request-Id": (
        True,
        {"type": "string", "pattern": REQUEST_ID_PATTERN},
        "The request's id (the client's own X-Request-Id when well formed); logs carry it",
    ),
    "Retry-After": (True, {"type": "string", "pattern": "^[0-9]+$"}, "Seconds to wait"),
    "Idempotent-Replayed": (
        False,
        {"type": "string", "enum": ["true"]},
        "Sent when this is the stored answer to an earlier request with this Idempotency-Key",
    ),
    "Allow": (True, {"type": "string"}, "The methods this path serves"),
    "WWW-Authenticate": (True, {"type": "string"}, "The bearer challenge"),
    "Cache-Control": (True, {"type": "string"}, "`no-cache`: an event stream is never stored"),
}
# Any value is accepted: one not matching the pattern is replaced, never refused.
REQUEST_ID = Param(
    "X-Request-Id",
    "header",
    {"type": "string"},
    description=f"Your id for this request, echoed back and logged when it matches "
    f"{REQUEST_ID_PATTERN} (else one is made up)",
)


def implied_answers(route: Route) -> list[Answer]:
    """What the middlewares and shared helpers make `route` answer besides its own answers."""
    doc = route.doc
    answers = [
        error(500, "internal_error"),
        Answer(
            405,
            "Another method than this path serves; `Allow` lists them",
            codes=("method_not_allowed",),
            headers=("Allow",),
        ),
    ]
    if is_limited(route.path):
        answers.append(error(429, "rate_limited", headers=("Retry-After",)))
    if doc.authenticated:
        answers.append(
            error(
                401,
                "missing_token",
                "invalid_token",
                "token_expired",
                headers=("WWW-Authenticate",),
            )
        )
    if doc.request is not None:
        answers.append(error(400, "invalid_json", "invalid_request", "unsupported_media_type"))
        answers.append(error(413, "body_too_large"))
    if doc.database:
        answers.append(error(503, "database_unavailable", headers=("Retry-After",)))
    return answers


def all_answers(route: Route) -> dict[int, Answer]:
    """The route's answers by status; answers of one status merge their codes and headers."""
    merged: dict[int, Answer] = {}
    for answer in (*route.doc.answers, *implied_answers(route)):
        known = merged.get(answer.status)
        if known is None:
            merged[answer.status] = answer
            continue
        if known.body != answer.body:
            raise ValueError(f"{route.path}: two bodies for status {answer.status}")
        merged[answer.status] = replace(
            known,
            codes=tuple(dict.fromkeys((*known.codes, *answer.codes))),
            headers=tuple(dict.fromkeys((*known.headers, *answer.headers))),
        )
    return dict(sorted(merged.items()))


def _schema(body: type[BaseModel] | Raw) -> tuple[str, dict[str, Any]]:
    if isinstance(body, Raw):
        return body.media_type, body.schema
    return "application/json", {"$ref": REF.format(model=body.__name__)}


def _response(answer: Answer) -> dict[str, Any]:
    description = answer.description
    if answer.codes:
        description += "; `error.code` is one of: " + ", ".join(answer.codes)
    media_type, schema = _schema(answer.body)
    names: tuple[HeaderName, ...] = ("X-Request-Id", *answer.headers)
    response: dict[str, Any] = {
        "description": description,
        "headers": {n: {"$ref": f"#/components/headers/{n}"} for n in names},
        "content": {media_type: {"schema": schema}},
    }
    if answer.codes:
        response["x-error-codes"] = list(answer.codes)  # the same list, for programs
    return response


def _parameter(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.where, "schema": p.schema}
    if p.required:
        out["required"] = True
    if p.description:
        out["description"] = p.description
    return out


def operation(route: Route) -> dict[str, Any]:
    doc = route.doc
    op: dict[str, Any] = {
        "operationId": doc.operation_id,
        "summary": doc.summary,
        "parameters": [_parameter(p) for p in (*doc.params, REQUEST_ID)],
    }
    if doc.authenticated:
        op["security"] = [{"bearer": []}]
    if doc.request is not None:
        op["requestBody"] = {
            "required": doc.request_required,
            "content": {"application/json": {"schema": _schema(doc.request)[1]}},
        }
    op["responses"] = {str(st): _response(a) for st, a in all_answers(route).items()}
    return op


def _models(routes: Sequence[Route]) -> list[type[BaseModel]]:
    found: dict[type[BaseModel], None] = {ErrorBody: None}
    for route in routes:
        if route.doc.request is not None:
            found[route.doc.request] = None
        for answer in route.doc.answers:
            if not isinstance(answer.body, Raw):
                found[answer.body] = None
    return list(found)


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    _, defs = models_json_schema([(m, "validation") for m in _models(routes)], ref_template=REF)
    headers = {
        name: {"required": required, "schema": schema, "description": description}
        for name, (required, schema, description) in HEADERS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payops",
            "version": "1",
            "description": "Token purchase intents and credits. Errors are "
            '`{"error": {"code", "message"}}`; a path not listed here answers 404 '
            "`route_not_found`.",
        },
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "headers": headers,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
