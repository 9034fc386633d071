"""`/v1/purchase-intents`: create, read, verify."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web

from api.auth import actor_of, principal
from api.http import json_response, read_json
from api.keys import SERVICES
from api.schemas import (
    CreateIntentRequest,
    VerifyConfirmedBody,
    VerifyPendingBody,
    VerifyRequest,
    intent_body,
)
from core import idempotency, logs, purchases
from core.errors import NotFound
from core.purchases import Credited


def intent_id_of(request: web.Request) -> uuid.UUID:
    try:
        value = uuid.UUID(request.match_info["intent_id"])
    except ValueError as exc:
        raise NotFound("no such purchase intent", code="intent_not_found") from exc
    logs.add(intent_id=str(value))
    return value


async def create_intent(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    body = await read_json(request, CreateIntentRequest, svc.settings.max_body_bytes)
    actor = actor_of(request, p)

    async def work(conn: asyncpg.Connection) -> idempotency.Response:
        intent = await purchases.create_intent(
            svc, conn, actor, credits=body.credits, wallet=body.wallet
        )
        logs.add(intent_id=str(intent.id))
        return idempotency.Response(
            201, intent_body(intent, svc.payment.decimals).model_dump(mode="json")
        )

    key = request.headers.get("Idempotency-Key")
    if key is None:
        async with svc.pool.acquire() as conn:
            result = await work(conn)
    else:
        result = await idempotency.run_once(
            svc.pool, scope="intent", principal=p.sub, key=key, request=body.model_dump(), work=work
        )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return json_response(result.body, status=result.status, headers=headers)


async def get_intent(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    intent = await purchases.get_intent(svc, p.sub, intent_id_of(request))
    return json_response(intent_body(intent, svc.payment.decimals))


async def verify_intent(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    intent_id = intent_id_of(request)
    body = await read_json(request, VerifyRequest, svc.settings.max_body_bytes)
    logs.add(tx_signature=body.signature)
    result = await purchases.verify_intent(svc, actor_of(request, p), intent_id, body.signature)
    if isinstance(result, Credited):
        assert result.intent.tx_signature is not None
        return json_response(
            VerifyConfirmedBody(
                status="CONFIRMED",
                intent_id=str(result.intent.id),
                tx_signature=result.intent.tx_signature,
                credited=result.credited,
                balance=result.balance,
                already_credited=result.duplicate,
            )
        )
    return json_response(
        VerifyPendingBody(
            status="PENDING",
            intent_id=str(result.intent.id),
            reason=result.reason.value,
            detail=result.detail,
            retry_after=result.retry_after,
        ),
        status=202,
        headers={"Retry-After": str(result.retry_after)},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/purchase-intents", create_intent, name="purchase-intents.create")
    app.router.add_get("/v1/purchase-intents/{intent_id}", get_intent, name="purchase-intents.get")
    app.router.add_post(
        "/v1/purchase-intents/{intent_id}/verify", verify_intent, name="purchase-intents.verify"
    )
