"""The OpenAPI 3.1 document of every route, built from the pydantic schemas."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import schemas as s
from core.chain.verdict import RejectCode

REF = "#/components/schemas/{model}"

_MODELS: list[type[BaseModel]] = [
    s.CreateIntentRequest,
    s.VerifyRequest,
    s.DebitRequest,
    s.IntentBody,
    s.VerifyConfirmedBody,
    s.VerifyPendingBody,
    s.CreditsBody,
    s.DebitBody,
    s.StatusBody,
    s.ErrorBody,
    s.HealthBody,
]

# Every error code a route can answer, by status, so clients can switch on them.
ERROR_CODES: dict[str, list[str]] = {
    "400": [
        "invalid_json",
        "invalid_request",
        "invalid_credits",
        "invalid_wallet",
        "invalid_signature",
        "invalid_idempotency_key",
        "idempotency_key_required",
        "unsupported_media_type",
    ],
    "401": ["missing_token", "invalid_token", "token_expired"],
    "403": ["insufficient_scope"],
    "404": ["intent_not_found", "route_not_found"],
    "409": ["signature_already_used", "intent_already_confirmed", "intent_rejected"],
    "413": ["body_too_large"],
    "422": ["idempotency_key_reused", "insufficient_credits", *[c.value for c in RejectCode]],
    "503": ["verify_paused", "database_unavailable", "rpc_unavailable"],
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        st: _json(s.ErrorBody, "Error; `error.code` is one of: " + ", ".join(ERROR_CODES[st]))
        for st in statuses
    }


_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_ID_PARAM = {
    "name": "intent_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Same key and body: the same response; same key, other body: 422.",
}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=REF)
    paths: dict[str, Any] = {
        "/v1/purchase-intents": {
            "post": {
                "operationId": "createPurchaseIntent",
                "summary": "Create a purchase intent priced by the server",
                "security": _AUTH,
                "parameters": [_IDEMPOTENCY],
                "requestBody": _body(s.CreateIntentRequest),
                "responses": {
                    "201": _json(s.IntentBody, "The new intent"),
                    **_errors("400", "401", "413", "422", "503"),
                },
            }
        },
        "/v1/purchase-intents/{intent_id}": {
            "get": {
                "operationId": "getPurchaseIntent",
                "summary": "Read one of your intents",
                "security": _AUTH,
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _json(s.IntentBody, "The intent"),
                    **_errors("401", "404", "503"),
                },
            }
        },
        "/v1/purchase-intents/{intent_id}/verify": {
            "post": {
                "operationId": "verifyPurchaseIntent",
                "summary": "Verify an intent with its payment's transaction signature",
                "security": _AUTH,
                "parameters": [_ID_PARAM],
                "requestBody": _body(s.VerifyRequest),
                "responses": {
                    "200": _json(s.VerifyConfirmedBody, "Confirmed and credited (exactly once)"),
                    "202": _json(s.VerifyPendingBody, "Not decidable yet; retry after Retry-After"),
                    **_errors("400", "401", "404", "409", "413", "422", "503"),
                },
            }
        },
        "/v1/credits": {
            "get": {
                "operationId": "getCredits",
                "summary": "Your balance and recent ledger entries",
                "security": _AUTH,
                "responses": {"200": _json(s.CreditsBody, "Balance"), **_errors("401", "503")},
            }
        },
        "/v1/credits/debits": {
            "post": {
                "operationId": "createDebit",
                "summary": "Spend a user's credits (internal services; scope credits:debit)",
                "security": _AUTH,
                "parameters": [{**_IDEMPOTENCY, "required": True}],
                "requestBody": _body(s.DebitRequest),
                "responses": {
                    "201": _json(s.DebitBody, "Debited"),
                    **_errors("400", "401", "403", "413", "422", "503"),
                },
            }
        },
        "/v1/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "The verify gate as the frontend must see it",
                "responses": {"200": _json(s.StatusBody, "Gate state"), **_errors("503")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": _json(s.HealthBody, "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: database and Solana RPC",
                "responses": {
                    "200": _json(s.HealthBody, "Ready"),
                    "503": _json(s.HealthBody, "Not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payops",
            "version": "1",
            "description": "Token purchase intents and credits",
        },
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
