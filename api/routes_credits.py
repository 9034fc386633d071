"""`/v1/credits`: the balance, and debits by internal services."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
from aiohttp import web

from api.auth import DEBIT_SCOPE, actor_of, principal, require_scope
from api.http import json_response, read_json
from api.keys import SERVICES
from api.routedoc import IDEMPOTENCY_KEY, Answer, Route, RouteDoc, error
from api.schemas import CreditsBody, DebitBody, DebitRequest, entry_body
from core import idempotency, ledger, logs
from core import ledger as ledger_db
from core.errors import InvalidInput


async def get_credits(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    balance = await ledger_db.balance(svc.pool, p.sub)
    entries = await ledger_db.recent_entries(svc.pool, p.sub)
    return json_response(
        CreditsBody(user_id=p.sub, balance=balance, entries=[entry_body(e) for e in entries])
    )


async def create_debit(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    require_scope(p, DEBIT_SCOPE)
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise InvalidInput("debits need an Idempotency-Key header", code="idempotency_key_required")
    body = await read_json(request, DebitRequest, svc.settings.max_body_bytes)
    logs.add(debit_user=body.user_id)
    actor = actor_of(request, p)

    async def work(conn: asyncpg.Connection) -> idempotency.Response:
        d = await ledger.debit(
            conn, actor, user_id=body.user_id, credits=body.credits, reason=body.reason, key=key
        )
        svc.metrics.credits_applied.labels("debit").inc(d.credits)
        return idempotency.Response(
            201,
            DebitBody(
                transaction_id=d.transaction_id,
                user_id=d.user_id,
                credits=d.credits,
                balance=d.balance,
            ).model_dump(mode="json"),
        )

    result = await idempotency.run_once(
        svc.pool, scope="debit", principal=p.sub, key=key, request=body.model_dump(), work=work
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return json_response(result.body, status=result.status, headers=headers)


GET = RouteDoc(
    "getCredits",
    "Your balance and recent ledger entries",
    authenticated=True,
    database=True,
    answers=(Answer(200, "Balance", CreditsBody),),
)
DEBIT = RouteDoc(
    "createDebit",
    f"Spend a user's credits (internal services; scope {DEBIT_SCOPE})",
    request=DebitRequest,
    params=(replace(IDEMPOTENCY_KEY, required=True),),
    authenticated=True,
    database=True,
    answers=(
        Answer(
            201,
            "Debited (or, for a repeated Idempotency-Key, the first debit)",
            DebitBody,
            headers=("Idempotent-Replayed",),
        ),
        error(400, "idempotency_key_required", "invalid_idempotency_key"),
        error(403, "insufficient_scope"),
        error(422, "idempotency_key_reused", "insufficient_credits"),
    ),
)

ROUTES = (
    Route("GET", "/v1/credits", "credits.get", get_credits, GET),
    Route("POST", "/v1/credits/debits", "credits.debit", create_debit, DEBIT),
)
