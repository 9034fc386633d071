"""The JSON-RPC 2.0 server: `create_app(chain)` answers POST / (single calls and batches) like a
Solana node, and GET /health with "ok".

Every method is a plain function `(chain, params) -> result` from one of the method modules;
LiteSVM is synchronous and fast, so handlers run on the event loop, one at a time, and each
call sees a consistent chain.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from aiohttp import web

from localnet import cheatcodes, methods_accounts, methods_tx
from localnet.chain import LocalChain
from localnet.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
)

CHAIN_KEY: Final = web.AppKey("localnet_chain", LocalChain)
METHODS: Final = {**methods_tx.METHODS, **methods_accounts.METHODS, **cheatcodes.METHODS}
_MAX_BODY_BYTES: Final = 10 * 1024 * 1024
_MAX_BATCH: Final = 1000

log = logging.getLogger("localnet.rpc")


def _error(code: int, message: str, request_id: Any = None, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": RpcError(code, message, data).to_json(), "id": request_id}


def answer(chain: LocalChain, call: Any) -> dict[str, Any] | None:
    """The response to one JSON-RPC call, or None for a notification (a call without id)."""
    if not isinstance(call, dict) or call.get("jsonrpc") != "2.0":
        return _error(INVALID_REQUEST, "Invalid request")
    request_id = call.get("id")
    method = call.get("method")
    params = call.get("params", [])
    if not isinstance(method, str):
        return _error(INVALID_REQUEST, "Invalid request", request_id)
    handler = METHODS.get(method)
    if handler is None:
        response = _error(METHOD_NOT_FOUND, "Method not found", request_id)
    elif not isinstance(params, list | type(None)):  # a node takes positional params only
        response = _error(INVALID_PARAMS, "Invalid params: expected an array", request_id)
    else:
        try:
            result = handler(chain, params or [])
        except RpcError as exc:
            response = {"jsonrpc": "2.0", "error": exc.to_json(), "id": request_id}
        except Exception:
            log.exception("%s failed", method)
            response = _error(INTERNAL_ERROR, "Internal error", request_id)
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": request_id}
    return None if "id" not in call else response


def _respond(body: Any) -> web.Response:
    if body is None:  # only notifications: nothing to say
        return web.Response(status=200)
    return web.json_response(body, dumps=lambda value: json.dumps(value, separators=(",", ":")))


async def handle_rpc(request: web.Request) -> web.Response:
    chain = request.app[CHAIN_KEY]
    try:
        payload = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _respond(_error(PARSE_ERROR, "Parse error"))
    if isinstance(payload, list):
        if not payload or len(payload) > _MAX_BATCH:
            return _respond(_error(INVALID_REQUEST, "Invalid request"))
        responses = [r for r in (answer(chain, call) for call in payload) if r is not None]
        return _respond(responses or None)
    return _respond(answer(chain, payload))


async def handle_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(chain: LocalChain) -> web.Application:
    """The aiohttp application serving `chain` over JSON-RPC."""
    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app[CHAIN_KEY] = chain
    app.router.add_post("/", handle_rpc)
    app.router.add_get("/health", handle_health)
    return app
