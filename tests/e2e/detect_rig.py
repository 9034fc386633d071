"""What the detection tests drive besides the harness: a webhook receiver, payments timed
from their landing, and a client waiting for an intent to leave PENDING.

- `WebhookReceiver`: an aiohttp server on 127.0.0.1 (a free port) that records every POST
  it gets (body, headers, when) and answers 200, or 503 while it is `down`;
- `pay`: a Solana Pay transfer on the local chain, with the moment it was seen finalized
  (the local chain finalizes a transaction as it lands, so this is its landing);
- `wait_status`: a client polling `GET /v1/purchase-intents/{id}` every 50 ms until the intent
  is no longer PENDING (the event stream is not used here);
- `leaders`: which processes logged that they lead a stream job (`jobs.lead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from core import jobs, webhooks
from tests.e2e.harness import Chain, Service
from tests.e2e.procs import Proc

WEBHOOK_SECRET: Final = "payops-e2e-webhook-secret-" + "fedcba9876543210" * 2
CLIENT_POLL_SECONDS: Final = 0.05


# --- the webhook receiver --------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    event_id: str
    type: str
    subject_key: str  # the intent id, or the user id for user events
    data: dict[str, Any]
    signature_ok: bool  # `webhooks.verify` of the header, body and secret on arrival
    accepted: bool  # answered 200 (not down)
    at: float  # time.monotonic() on arrival


@dataclass
class WebhookReceiver:
    secret: str = WEBHOOK_SECRET
    url: str = ""
    down: bool = False
    received: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        header = request.headers.get(webhooks.SIGNATURE_HEADER, "")
        ok = webhooks.verify(header, body, self.secret.encode(), datetime.now(UTC))
        payload = json.loads(body)
        data = dict(payload.get("data") or {})
        key = str(data.get("intent_id") or data.get("user_id") or "")
        assert request.headers.get(webhooks.EVENT_ID_HEADER) == payload["id"]
        self.received.append(
            Received(payload["id"], payload["type"], key, data, ok, not self.down, at)
        )
        return web.Response(status=503 if self.down else 200)

    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.accepted]

    def accepted_for(self, key: str) -> list[Received]:
        return [r for r in self.received if r.accepted and r.subject_key == key]


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        receiver.url = f"http://{host}:{port}/hook"
        yield receiver
    finally:
        await runner.cleanup()


def detect_settings(rpc_url: str, receiver: WebhookReceiver) -> dict[str, str]:
    """A service that detects payments and tells the receiver: the watcher at its default
    interval (1 s), webhooks every second with a short backoff. The watcher and the webhook
    delivery run with the scheduler, so it is on; its recovery sweep is kept off the tests'
    intents (it would credit them too), so only the watcher credits."""
    return {
        "PAYOPS_SOLANA_RPC_URL": rpc_url,
        "PAYOPS_SCHEDULER_ENABLED": "true",
        "PAYOPS_RECOVERY_MIN_AGE_SECONDS": "86400",
        "PAYOPS_WATCH_ENABLED": "true",
        "PAYOPS_WEBHOOK_URL": receiver.url,
        "PAYOPS_WEBHOOK_SECRET": receiver.secret,
        "PAYOPS_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
        "PAYOPS_WEBHOOK_BACKOFF_CAP_SECONDS": "1",
        "PAYOPS_WEBHOOK_TIMEOUT_SECONDS": "2",
    }


# --- paying and waiting ----------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    intent: Mapping[str, Any]
    signature: str
    landed: float  # time.monotonic() when the chain first reported it finalized


async def pay(
    chain: Chain, intent: Mapping[str, Any], *, amount: int | None = None, memo: str | None = None
) -> Payment:
    """Pay `intent` with its reference (as a wallet does); once finalized, the payment."""
    signature = await chain.wallet.pay(
        intent, decimals=chain.info.decimals, amount=amount, memo=memo
    )
    status = await chain.wallet.wait_finalized(signature)
    landed = time.monotonic()
    assert status["err"] is None, status
    return Payment(intent, signature, landed)


async def wait_status(
    service: Service, user: str, intent_id: str, *, within: float
) -> tuple[dict[str, Any], float]:
    """Poll the intent as its owner every 50 ms until it leaves PENDING: (it, when)."""
    path = f"/v1/purchase-intents/{intent_id}"
    try:
        async with asyncio.timeout(within):
            while True:
                answer = await service.request("GET", path, user=user)
                assert answer.status == 200, answer
                if answer.body["status"] != "PENDING":
                    return dict(answer.body), time.monotonic()
                await asyncio.sleep(CLIENT_POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"intent {intent_id} still PENDING after {within} s") from None


async def credited_intents(service: Service, ids: list[str]) -> dict[str, int]:
    """Purchase credits per intent id among `ids` (intents with none are absent)."""
    rows = await service.pool.fetch(
        """SELECT intent_id, count(*) AS n FROM ledger_transactions
           WHERE kind = 'purchase' AND intent_id = ANY($1::uuid[]) GROUP BY intent_id""",
        [uuid.UUID(i) for i in ids],
    )
    return {str(r["intent_id"]): int(r["n"]) for r in rows}


async def wait_all_credited(service: Service, ids: list[str], *, within: float) -> float:
    """Seconds until every intent of `ids` is credited; fails naming the missing ones."""
    started = time.monotonic()
    deadline = started + within
    while True:
        credited = await credited_intents(service, ids)
        if len(credited) == len(ids):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            missing = sorted(set(ids) - set(credited))
            raise AssertionError(
                f"{len(missing)} of {len(ids)} intents not credited within {within} s: "
                f"{missing[:5]}"
            )
        await asyncio.sleep(0.1)


# --- who leads -------------------------------------------------------------------------------


def leaders(proc: Proc, job: str) -> list[str]:
    """The `replica` names in `proc`'s "<job>: leading on <replica>" log lines, in order."""
    found = []
    text = proc.stderr.read_text(errors="replace") if proc.stderr.exists() else ""
    prefix = f"{job}: leading on "
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            message = str(json.loads(line).get("msg", ""))
            if message.startswith(prefix):
                found.append(message.removeprefix(prefix))
    return found


async def lock_holders(service: Service, job: str) -> list[int]:
    """Backend pids holding `job`'s advisory lock (pg_locks)."""
    rows = await service.pool.fetch(
        """SELECT pid FROM pg_locks
           WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2
             AND objsubid = 2 AND database = (SELECT oid FROM pg_database
                                              WHERE datname = current_database())""",
        jobs.JOB_LOCK_CLASS,
        jobs.lock_key(job),
    )
    return [int(r["pid"]) for r in rows]
