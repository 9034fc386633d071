"""Reading requests and writing responses: JSON in, JSON out, one error shape."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PayopsError,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unprocessable,
)

Model = TypeVar("Model", bound=BaseModel)

STATUS_OF: list[tuple[type[PayopsError], int]] = [
    (InvalidInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (Unprocessable, 422),
    (RateLimited, 429),
    (Unavailable, 503),
]


def status_of(error: PayopsError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return 500


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: `json.dumps`/`json.loads` with options build an encoder/decoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode


def dumps(value: Any) -> str:
    """`json.dumps(value, separators=(",", ":"), default=str)`."""
    return _encode(value)


def json_response(
    body: BaseModel | dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def error_response(error: PayopsError) -> web.Response:
    headers = {}
    if isinstance(error, Unavailable | RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="payops"'
    return json_response(
        {"error": {"code": error.code, "message": error.message}},
        status=status_of(error),
        headers=headers,
    )


async def read_json(request: web.Request, model: type[Model], max_bytes: int) -> Model:
    """The request body as `model`, or a 400/413 with a stable code; reads at most max_bytes."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the request body is over {max_bytes} bytes")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the request body is over {max_bytes} bytes")
    if request.content_type != "application/json":
        raise InvalidInput("send the body as application/json", code="unsupported_media_type")
    try:
        # as json.loads reads bytes (UTF-8, -16 or -32), with a decoder built once
        data = _decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidInput("the request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_describe(exc), code="invalid_request") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
