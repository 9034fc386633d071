"""`GET /v1/purchase-intents/{id}/events`: an intent's status as Server-Sent Events.

The stream opens with `event: status` carrying the intent as `GET /v1/purchase-intents/{id}`
returns it, sends one more each time the intent changes, a `: keep-alive` comment every
PAYOPS_EVENTS_KEEPALIVE_SECONDS, and ends once the intent has left PENDING (at once for an
intent that already has) or after PAYOPS_EVENTS_MAX_SECONDS (the client reconnects).

Changes arrive through `core.notify.Notifications`: one LISTEN connection per process for
every stream, woken by the database's notification from whichever replica made the change.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from api.auth import principal
from api.http import dumps
from api.keys import REQUEST_ID, SERVICES
from api.routedoc import Answer, Raw, Route, RouteDoc
from api.routes_intents import INTENT_ID, NOT_FOUND, intent_id_of
from api.schemas import intent_body
from core import db, purchases, watch
from core.config import PaymentConfig
from core.notify import Notifications, Subscription
from core.purchases import Intent, IntentStatus
from core.services import Services

EVENTS: web.AppKey[Notifications] = web.AppKey("intent_notifications")
KEEP_ALIVE = b": keep-alive\n\n"
# The client left, or the database did: the stream ends and the client reconnects.
STREAM_ENDS: tuple[type[BaseException], ...] = (ConnectionError, *db.DATABASE_ERRORS)
STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def setup(app: web.Application, services: Services) -> None:
    """One `Notifications` per app; closed on shutdown, which also ends the open streams
    (aiohttp would otherwise wait for them before it stops)."""
    app[EVENTS] = Notifications(services.pool)

    async def close(app: web.Application) -> None:
        await app[EVENTS].close()

    app.on_shutdown.append(close)


def sse(event: str, data: str) -> bytes:
    """One Server-Sent Event; every line of `data` gets its own `data:` field."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


def status_event(intent: Intent, payment: PaymentConfig) -> bytes:
    return sse("status", dumps(intent_body(intent, payment).model_dump(mode="json")))


async def intent_events(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    p = principal(request)
    intent_id = intent_id_of(request)
    notifications = request.app[EVENTS]
    # Subscribed before the read: a change committed after it wakes this stream.
    with notifications.subscribe(str(intent_id)) as sub:
        intent = await purchases.get_intent(svc, p.sub, intent_id)
        if request.method == "HEAD":
            return web.Response(headers=STREAM_HEADERS)
        response = web.StreamResponse(headers=STREAM_HEADERS)
        # Set before the headers go out: the middleware's own comes too late for a stream.
        response.headers["X-Request-Id"] = request[REQUEST_ID]
        await response.prepare(request)
        try:
            await _follow(response, svc, notifications, sub, intent)
        except STREAM_ENDS:
            return response
        await response.write_eof()
        return response


async def _follow(
    response: web.StreamResponse,
    svc: Services,
    notifications: Notifications,
    sub: Subscription,
    intent: Intent,
) -> None:
    """Write the intent's status, then each change, until it leaves PENDING or time is up."""
    s = svc.settings
    clock = asyncio.get_running_loop().time
    ends = clock() + s.events_max_seconds
    sent = status_event(intent, svc.payment)
    await response.write(sent)
    told: set[str] = set()
    await _tell_sightings(response, svc, intent, told)
    while intent.status is IntentStatus.PENDING and not notifications.closed:
        left = ends - clock()
        if left <= 0:
            return
        if not await sub.wait(min(s.events_keepalive_seconds, left)):
            if clock() < ends:
                await response.write(KEEP_ALIVE)
            continue
        intent = await purchases.get_intent(svc, intent.user_id, intent.id)
        event = status_event(intent, svc.payment)
        if event != sent:  # a wake-up after a reconnect may find nothing new
            await response.write(event)
            sent = event
        await _tell_sightings(response, svc, intent, told)


async def _tell_sightings(
    response: web.StreamResponse, svc: Services, intent: Intent, told: set[str]
) -> None:
    """`event: seen` for each payment to a PENDING intent seen at `confirmed` and not told
    yet: paid, waiting for finality (the credit follows as a `status` event)."""
    if intent.status is not IntentStatus.PENDING:
        return
    for seen in await watch.sightings_of(svc.pool, intent.id):
        if seen.signature in told:
            continue
        told.add(seen.signature)
        data = {
            "signature": seen.signature,
            "slot": seen.slot,
            "amount": str(seen.amount),
            "commitment": "confirmed",
            "seen_at": seen.seen_at.isoformat(),
        }
        await response.write(sse("seen", dumps(data)))


EVENTS_DOC = RouteDoc(
    "streamPurchaseIntentEvents",
    "Follow one of your intents as Server-Sent Events until it leaves PENDING",
    params=(INTENT_ID,),
    authenticated=True,
    database=True,
    answers=(
        Answer(
            200,
            "A text/event-stream: at once `event: status` with the intent (as "
            "getPurchaseIntent returns it) as its `data`, then one more each time it "
            "changes; `event: seen` (signature, slot, amount, commitment `confirmed`) when "
            "the treasury watcher sees a payment to it before it is final; a `: keep-alive` "
            "comment every 15 s (PAYOPS_EVENTS_KEEPALIVE_SECONDS); "
            "it ends once the intent is no longer PENDING, or after "
            "PAYOPS_EVENTS_MAX_SECONDS (300 s): reconnect to keep following it",
            Raw(
                "text/event-stream",
                {"type": "string", "description": "Server-Sent Events (`status`, `seen`)"},
            ),
            headers=("Cache-Control",),
        ),
        NOT_FOUND,
    ),
)

ROUTES = (
    Route(
        "GET",
        "/v1/purchase-intents/{intent_id}/events",
        "purchase-intents.events",
        intent_events,
        EVENTS_DOC,
    ),
)
