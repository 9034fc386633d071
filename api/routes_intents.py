"""`/v1/purchase-intents`: create, read, verify."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web

from api.auth import actor_of, principal
from api.http import json_response, read_json
from api.keys import SERVICES
from api.routedoc import IDEMPOTENCY_KEY, Answer, Param, Route, RouteDoc, error
from api.schemas import (
    CreateIntentRequest,
    IntentBody,
    VerifyConfirmedBody,
    VerifyPendingBody,
    VerifyRequest,
    intent_body,
)
from core import idempotency, logs, purchases
from core.chain.verdict import PendingReason, RejectCode
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
        return idempotency.Response(201, intent_body(intent, svc.payment).model_dump(mode="json"))

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
    return json_response(intent_body(intent, svc.payment))


LOOKUPS: web.AppKey[purchases.Flights[uuid.UUID, purchases.VerifyResult]] = web.AppKey(
    "reference_lookups"
)


def setup(app: web.Application) -> None:
    """What the intent routes keep per process: the reference lookups in flight."""
    app[LOOKUPS] = purchases.Flights()


async def verify_intent(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    intent_id = intent_id_of(request)
    # No body at all is the same as `{}`: verify by the intent's reference.
    body = (
        await read_json(request, VerifyRequest, svc.settings.max_body_bytes)
        if request.body_exists
        else VerifyRequest()
    )
    actor = actor_of(request, p)
    if body.signature is None:
        result = await purchases.verify_by_reference(
            svc, actor, intent_id, flights=request.app[LOOKUPS]
        )
    else:
        logs.add(tx_signature=body.signature)
        result = await purchases.verify_intent(svc, actor, intent_id, body.signature)
    if isinstance(result, Credited):
        logs.add(tx_signature=result.intent.tx_signature)
        return json_response(confirmed_body(result))
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


def confirmed_body(result: Credited) -> dict[str, object]:
    """`VerifyConfirmedBody` as a plain dict: every verify and every duplicate answers with
    it, and pydantic would build and dump a model for the same bytes
    (tests/unit/test_verify_body.py holds the two together)."""
    assert result.intent.tx_signature is not None
    return {
        "status": "CONFIRMED",
        "intent_id": str(result.intent.id),
        "tx_signature": result.intent.tx_signature,
        "credited": result.credited,
        "balance": result.balance,
        "already_credited": result.duplicate,
    }


INTENT_ID = Param("intent_id", "path", {"type": "string", "format": "uuid"}, required=True)
NOT_FOUND = error(404, "intent_not_found")

CREATE = RouteDoc(
    "createPurchaseIntent",
    "Create a purchase intent priced by the server",
    request=CreateIntentRequest,
    params=(IDEMPOTENCY_KEY,),
    authenticated=True,
    database=True,
    answers=(
        Answer(
            201,
            "The new intent (or, for a repeated Idempotency-Key, the first one)",
            IntentBody,
            headers=("Idempotent-Replayed",),
        ),
        error(400, "invalid_credits", "invalid_wallet", "invalid_idempotency_key"),
        error(422, "idempotency_key_reused"),
    ),
)
GET = RouteDoc(
    "getPurchaseIntent",
    "Read one of your intents",
    params=(INTENT_ID,),
    authenticated=True,
    database=True,
    answers=(Answer(200, "The intent", IntentBody), NOT_FOUND),
)
VERIFY = RouteDoc(
    "verifyPurchaseIntent",
    "Verify an intent with its payment's transaction signature, or without one (no body, or "
    "`{}`): the server finds the payment by the intent's Solana Pay reference",
    request=VerifyRequest,
    request_required=False,
    params=(INTENT_ID,),
    authenticated=True,
    database=True,
    answers=(
        Answer(200, "Confirmed and credited (exactly once)", VerifyConfirmedBody),
        Answer(
            202,
            "Not decidable yet; retry after Retry-After. `reason` is one of: "
            + ", ".join(r.value for r in PendingReason),
            VerifyPendingBody,
            headers=("Retry-After",),
        ),
        error(400, "invalid_signature"),
        NOT_FOUND,
        error(409, "signature_already_used", "intent_already_confirmed", "intent_rejected"),
        error(422, *(c.value for c in RejectCode)),
        error(503, "verify_paused", headers=("Retry-After",)),
    ),
)

ROUTES = (
    Route("POST", "/v1/purchase-intents", "purchase-intents.create", create_intent, CREATE),
    Route("GET", "/v1/purchase-intents/{intent_id}", "purchase-intents.get", get_intent, GET),
    Route(
        "POST",
        "/v1/purchase-intents/{intent_id}/verify",
        "purchase-intents.verify",
        verify_intent,
        VERIFY,
    ),
)
