"""`/openapi.json` describes every route the service serves, and every answer it gives.

The routes come from the application as `payops serve` builds it (Slack included). The
answers come from exercising it: each probe sends a request meant to produce one answer
class (success, an error a handler raises, or what the middlewares add: 405, 429, 401, 503
with the database down, 500) and its status, error code and headers are compared with the
document. Then every status the document lists must have been seen, so the document
cannot claim what the service never answers.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from api.app import api_document
from api.routes_ops import OPERATOR_SCOPE
from core import db
from core.chain.rpc import SolanaRpc
from core.chain.verdict import PaymentExpectation, Pending, PendingReason, RejectCode, Rejected
from core.gate import GateReader, GateState
from core.services import Services
from payops.compose import Running, service_app
from tests.support import (
    ScriptedVerifier,
    api_client,
    bearer,
    build_services,
    service_bearer,
    signature,
)

DOC = api_document()
# Described by HTTP itself (and the `content` of each answer), not by this API.
TRANSPORT_HEADERS = {"content-type", "content-length", "date", "server", "transfer-encoding"}
NOT_IN_DOCUMENT = {
    ("POST", "/slack/events"): "Slack's own signed protocol, declared in manifest.yml",
}
# Documented everywhere because any defect answers it; induced where a dependency can fail.
NOT_INDUCED = {500}
Op = tuple[str, str]  # (method, path template)


@dataclass
class Record:
    problems: list[str] = field(default_factory=list)
    seen: dict[Op, set[int]] = field(default_factory=lambda: defaultdict(set))

    async def check(self, op: Op, resp: ClientResponse, expect: int | None = None) -> None:
        """Compare one response of `op` with the document; `expect`: what the probe is for.

        HEAD is compared with GET's description: it answers as GET does, without the body."""
        method, template = op
        if expect is not None:
            assert resp.status == expect, f"{op} answered {resp.status}: {await resp.text()}"
        described = "get" if method == "HEAD" else method.lower()
        self.seen[(described.upper(), template)].add(resp.status)
        answer = DOC["paths"][template][described]["responses"].get(str(resp.status))
        if answer is None:
            self.problems.append(f"{method} {template}: status {resp.status} is undocumented")
            return
        declared = {h.lower() for h in answer["headers"]}
        for name in {h.lower() for h in resp.headers} - declared - TRANSPORT_HEADERS:
            self.problems.append(f"{method} {template} {resp.status}: header {name} undocumented")
        for name, header in DOC["components"]["headers"].items():
            if name.lower() in declared and header["required"] and name not in resp.headers:
                self.problems.append(f"{method} {template} {resp.status}: {name} missing")
        codes = answer.get("x-error-codes")
        if codes is not None and method != "HEAD":
            code = (await resp.json())["error"]["code"]
            if code not in codes:
                self.problems.append(f"{method} {template} {resp.status}: code {code} undocumented")


def operations() -> list[Op]:
    return [(m.upper(), path) for path, item in DOC["paths"].items() for m in item]


def served(app_routes: Any) -> set[Op]:
    # HEAD comes with every GET and answers as it does (RFC 9110), without the body.
    return {("GET" if r.method == "HEAD" else r.method, r.resource.canonical) for r in app_routes}


async def test_every_route_the_service_serves_is_in_the_document(pool: asyncpg.Pool) -> None:
    svc = build_services(
        pool,
        ScriptedVerifier(),
        slack_bot_token="xoxb-test",
        slack_signing_secret="s" * 32,
        slack_api_url="http://127.0.0.1:9/api/",
        scheduler_enabled=False,
    )
    rpc = SolanaRpc("http://127.0.0.1:9")
    try:
        app = service_app(Running(svc, rpc))
    finally:
        await rpc.close()
    routes = served(app.router.routes())
    assert set(NOT_IN_DOCUMENT) <= routes, "an exemption names a route that is not served"
    assert routes - set(NOT_IN_DOCUMENT) == set(operations())


@dataclass
class Prober:
    client: TestClient[Any, Any]
    record: Record
    intent_id: str = str(uuid.uuid4())

    async def valid(self, op: Op, expect: int | None = None, **headers: str) -> None:
        """A well-formed request of `op` with every credential; `headers` add or override."""
        method, template = op
        path = template.replace("{intent_id}", self.intent_id).replace("{command}", "gate")
        body = {
            "/v1/purchase-intents": {"credits": 1},
            "/v1/purchase-intents/{intent_id}/verify": {"signature": signature()},
            "/v1/credits/debits": {"user_id": "alice", "credits": 1},
            "/v1/ops/{command}": {"args": ["status"]},
        }.get(template)
        sent = {**service_bearer("alice"), "Idempotency-Key": uuid.uuid4().hex, **headers}
        sent = {k: v for k, v in sent.items() if v}
        resp = await self.client.request(method, path, json=body, headers=sent)
        await self.record.check(op, resp, expect)

    async def send(self, op: Op, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        resp = await self.client.request(op[0], path, **kwargs)
        await self.record.check(op, resp, expect)
        return await resp.json() if op[0] != "HEAD" and resp.status < 300 else {}


def _is(op: Op, part: str) -> bool:
    """Whether `op`'s description has `part` (`security`, `requestBody`)."""
    return part in DOC["paths"][op[1]][op[0].lower()]


async def _handlers_own_answers(p: Prober, verifier: ScriptedVerifier) -> None:
    """Each status a handler answers by itself, one request each."""
    alice, intents = bearer("alice"), "/v1/purchase-intents"
    create, get = ("POST", intents), ("GET", intents + "/{intent_id}")
    verify = ("POST", intents + "/{intent_id}/verify")
    debit, credits = ("POST", "/v1/credits/debits"), ("GET", "/v1/credits")
    key = {**alice, "Idempotency-Key": "k1"}
    first = await p.send(create, intents, 201, json={"credits": 2}, headers=key)
    await p.send(create, intents, 201, json={"credits": 2}, headers=key)  # replayed
    await p.send(create, intents, 422, json={"credits": 3}, headers=key)
    await p.send(create, intents, 400, json={"credits": 1, "wallet": "1" * 40}, headers=alice)
    await p.send(create, intents, 400, data="{", headers=alice)
    p.intent_id = first["id"]
    await p.valid(get, 200)
    await p.send(get, f"{intents}/{uuid.uuid4()}", 404, headers=alice)
    await p.send(get, f"{intents}/not-a-uuid", 404, headers=alice)
    events = ("GET", intents + "/{intent_id}/events")
    await p.send(events, f"{intents}/{uuid.uuid4()}/events", 404, headers=alice)
    sig, at = signature(), f"{intents}/{first['id']}/verify"
    verifier.script[sig] = Pending(PendingReason.NOT_FINAL, "not final")
    await p.send(verify, at, 202, json={"signature": sig}, headers=alice)
    await p.send(verify, at, 400, json={"signature": "not one"}, headers=alice)
    del verifier.script[sig]
    await p.send(verify, at, 200, json={"signature": sig}, headers=alice)
    unknown = f"{intents}/{uuid.uuid4()}/verify"
    await p.send(verify, unknown, 404, json={"signature": sig}, headers=alice)
    other = await p.send(create, intents, 201, json={"credits": 2}, headers=alice)
    at_other = f"{intents}/{other['id']}/verify"
    await p.send(verify, at_other, 409, json={"signature": sig}, headers=alice)
    bad = signature()
    verifier.script[bad] = Rejected(RejectCode.WRONG_MINT, "other mint")
    await p.send(verify, at_other, 422, json={"signature": bad}, headers=alice)
    await p.valid(credits, 200)
    await p.valid(debit, 201, **{"Idempotency-Key": "d1"})
    await p.valid(debit, 201, **{"Idempotency-Key": "d1"})  # replayed
    bob = {"user_id": "bob", "credits": 1}
    headers = {**service_bearer(), "Idempotency-Key": "d2"}
    await p.send(debit, "/v1/credits/debits", 422, json=bob, headers=headers)
    await p.valid(debit, 403, Authorization=bearer("alice")["Authorization"])
    await p.valid(debit, 400, **{"Idempotency-Key": ""})


async def _shared_answers(p: Prober) -> None:
    """On every route: no credentials, HEAD, a body not JSON or too large, another method."""
    for op in operations():
        await p.valid(op, 401 if _is(op, "security") else None, Authorization="")
        if op[0] == "GET":
            await p.valid(("HEAD", op[1]))
        if _is(op, "requestBody"):
            await p.valid(op, 400, **{"Content-Type": "text/plain"})
            resp = await p.client.request(
                op[0],
                op[1].replace("{intent_id}", p.intent_id).replace("{command}", "gate"),
                data=b"{" * 2000,
                headers={**service_bearer("alice"), "Idempotency-Key": uuid.uuid4().hex},
            )
            await p.record.check(op, resp, 413)
    for template, item in DOC["paths"].items():
        path = template.replace("{intent_id}", p.intent_id).replace("{command}", "gate")
        resp = await p.client.request("PATCH", path)
        for method in item:
            await p.record.check((method.upper(), template), resp, 405)


async def _healthy_service(pool: asyncpg.Pool, record: Record) -> str:
    verifier = ScriptedVerifier()
    async with api_client(build_services(pool, verifier, max_body_bytes=1024)) as client:
        p = Prober(client, record)
        await _handlers_own_answers(p, verifier)
        await _shared_answers(p)
    return p.intent_id


async def _rate_limits(pool: asyncpg.Pool, record: Record) -> None:
    """Per address, then per user: every limited route answers 429, the others do not."""
    by_address = build_services(
        pool, ScriptedVerifier(), rate_limit_per_ip_per_second=0.001, rate_limit_per_ip_burst=1
    )
    async with api_client(by_address) as client:
        p = Prober(client, record)
        await client.get("/v1/status")  # the address's one request
        for op in operations():
            await p.valid(op, 429 if op[1].startswith("/v1/") else None)
    by_user = build_services(
        pool,
        ScriptedVerifier(),
        rate_limit_per_user_per_second=0.001,
        rate_limit_per_user_burst=1,
    )
    async with api_client(by_user) as client:
        p = Prober(client, record)
        await client.get("/v1/credits", headers=bearer("alice"))  # alice's one request
        for op in operations():
            await p.valid(op, 429 if _is(op, "security") else None)


async def _database_down(database_url: str, record: Record) -> None:
    closed = await db.create_pool(database_url, min_size=1, max_size=1)
    await closed.close()
    async with api_client(build_services(closed, ScriptedVerifier())) as client:
        p = Prober(client, record)
        for op in operations():
            await p.valid(op)


class BrokenGate(GateReader):
    async def state(self) -> GateState:
        raise RuntimeError("a defect")


class BrokenVerifier:
    async def verify(self, signature: str, expected: PaymentExpectation, now: datetime) -> Any:
        raise RuntimeError("a defect")


def broken_clock() -> datetime:
    raise RuntimeError("a defect")


async def _defects(pool: asyncpg.Pool, record: Record, intent_id: str) -> None:
    """A dependency that fails unexpectedly: 500 `internal_error`, never a bare traceback."""
    svc: Services = build_services(pool, BrokenVerifier())
    svc = replace(svc, gate=BrokenGate(pool), clock=broken_clock)
    async with api_client(svc) as client:
        p = Prober(client, record, intent_id)
        for op in operations():
            await p.valid(op, 500 if op == ("GET", "/v1/status") else None)


async def _operator_answers(pool: asyncpg.Pool, database_url: str, record: Record) -> None:
    """`POST /v1/ops/{command}` as `payops serve` wires it (the runner comes from compose)."""
    op: Op = ("POST", "/v1/ops/{command}")
    oncall, nobody = bearer("U_ONCALL", OPERATOR_SCOPE), bearer("U_NOBODY", OPERATOR_SCOPE)
    closed = await db.create_pool(database_url, min_size=1, max_size=1)
    await closed.close()
    for used in (pool, closed):
        svc = build_services(
            used, ScriptedVerifier(), slack_oncall="U_ONCALL", scheduler_enabled=False
        )
        rpc = SolanaRpc("http://127.0.0.1:9")
        client: TestClient[Any, Any] = TestClient(TestServer(service_app(Running(svc, rpc))))
        await client.start_server()
        p = Prober(client, record)
        try:
            status = {"json": {"args": ["status"]}, "headers": oncall}
            if used is closed:
                await p.send(op, "/v1/ops/gate", 503, **status)
                continue
            await p.send(op, "/v1/ops/gate", 200, **status)
            await p.send(op, "/v1/ops/gate", 200, json={"args": ["open"]}, headers=oncall)
            await p.send(op, "/v1/ops/gate", 403, **{**status, "headers": nobody})
            await p.send(op, "/v1/ops/nope", 400, **status)
            await p.send(op, "/v1/ops/gate", 400, json={"args": "status"}, headers=oncall)
        finally:
            await client.close()
            await rpc.close()


async def test_every_answer_is_documented_and_every_documented_status_is_answered(
    pool: asyncpg.Pool, database_url: str
) -> None:
    record = Record()
    intent_id = await _healthy_service(pool, record)
    await _rate_limits(pool, record)
    await _database_down(database_url, record)
    await _defects(pool, record, intent_id)
    await _operator_answers(pool, database_url, record)
    assert record.problems == []
    never: dict[str, list[int]] = {}
    for method, template in operations():
        documented = {int(st) for st in DOC["paths"][template][method.lower()]["responses"]}
        missing = documented - record.seen[(method, template)] - NOT_INDUCED
        if missing:
            never[f"{method} {template}"] = sorted(missing)
    assert never == {}, "documented, never answered"
    assert any(500 in statuses for statuses in record.seen.values())
