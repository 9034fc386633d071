"""A verify without a signature, over HTTP against the local chain and PostgreSQL: the payment
is found by the intent's Solana Pay reference (or the treasury watcher's record of it) and
credited exactly once, however many callers ask at the same time."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from core import ledger
from core.chain.rpc import SolanaRpc
from core.services import Services
from tests.chain_rig import Rig
from tests.support import api_client, bearer

pytestmark = pytest.mark.timeout(90)


class CountingChain:
    """The node's `getSignaturesForAddress`, counted, each answer held for `delay` seconds."""

    def __init__(self, rpc: SolanaRpc, delay: float = 0.0) -> None:
        self.rpc = rpc
        self.delay = delay
        self.lookups = 0

    async def get_signatures_for_address(
        self,
        address: str,
        limit: int | None = None,
        before: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        self.lookups += 1
        await asyncio.sleep(self.delay)
        return await self.rpc.get_signatures_for_address(
            address, limit=limit, before=before, until=until
        )


def _services(rig: Rig, chain: CountingChain, **settings: Any) -> Services:
    svc = replace(rig.services, chain=chain)
    if settings:
        svc = replace(svc, settings=svc.settings.model_copy(update=settings))
    return svc


async def _written(pool: asyncpg.Pool, intent_id: uuid.UUID) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT i.status,
              (SELECT count(*) FROM ledger_transactions t WHERE t.intent_id = i.id) AS credits,
              (SELECT coalesce(array_agg(source || ':' || outcome ORDER BY id), '{}')
                 FROM verification_attempts a WHERE a.intent_id = i.id) AS attempts
           FROM purchase_intents i WHERE i.id = $1""",
        intent_id,
    )
    assert row is not None
    return dict(row.items())


def _verify_url(intent_id: uuid.UUID) -> str:
    return f"/v1/purchase-intents/{intent_id}/verify"


async def test_a_paid_intent_never_verified_is_credited_once_by_an_empty_verify(rig: Rig) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("ana", credits=3)
    signature = await rig.pay(intent)  # the wallet paid; the frontend never saw the signature
    async with api_client(_services(rig, chain)) as client:
        first = await client.post(_verify_url(intent.id), headers=bearer("ana"))
        assert first.status == 200, await first.text()
        assert await first.json() == {
            "status": "CONFIRMED",
            "intent_id": str(intent.id),
            "tx_signature": signature,
            "credited": 3,
            "balance": 3,
            "already_credited": False,
        }
        again = await client.post(_verify_url(intent.id), json={}, headers=bearer("ana"))
        assert again.status == 200
        assert (await again.json())["already_credited"] is True
    assert chain.lookups == 1  # the confirmed intent answered without asking the chain
    assert await ledger.balance(rig.pool, "ana") == 3
    assert await _written(rig.pool, intent.id) == {
        "status": "CONFIRMED",
        "credits": 1,
        "attempts": ["api:confirmed", "api:duplicate"],
    }


async def test_an_unpaid_intent_answers_202_payment_not_found_and_writes_nothing(
    rig: Rig,
) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("ben")
    async with api_client(_services(rig, chain)) as client:
        resp = await client.post(_verify_url(intent.id), json={}, headers=bearer("ben"))
        assert resp.status == 202
        assert resp.headers["Retry-After"] == "5"
        body = await resp.json()
    assert (body["status"], body["reason"]) == ("PENDING", "payment_not_found")
    assert await _written(rig.pool, intent.id) == {
        "status": "PENDING",
        "credits": 0,
        "attempts": [],
    }


async def test_twenty_concurrent_empty_verifies_credit_once_with_one_chain_lookup(
    rig: Rig,
) -> None:
    chain = CountingChain(rig.rpc, delay=0.3)  # every caller arrives while it is in flight
    intent = await rig.intent("cleo", credits=2)
    await rig.pay(intent)
    async with api_client(_services(rig, chain)) as client:

        async def verify() -> tuple[int, dict[str, Any]]:
            resp = await client.post(_verify_url(intent.id), headers=bearer("cleo"))
            return resp.status, await resp.json()

        answers = await asyncio.gather(*(verify() for _ in range(20)))
    assert {status for status, _ in answers} == {200}
    assert {body["balance"] for _, body in answers} == {2}
    assert chain.lookups == 1
    assert await ledger.balance(rig.pool, "cleo") == 2
    facts = await _written(rig.pool, intent.id)
    assert (facts["status"], facts["credits"]) == ("CONFIRMED", 1)


async def test_someone_elses_intent_is_404_and_the_chain_is_not_asked(rig: Rig) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("dina")
    await rig.pay(intent)
    async with api_client(_services(rig, chain)) as client:
        resp = await client.post(_verify_url(intent.id), json={}, headers=bearer("mallory"))
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "intent_not_found"
        unknown = await client.post(_verify_url(uuid.uuid4()), headers=bearer("mallory"))
        assert unknown.status == 404
    assert chain.lookups == 0
    assert await _written(rig.pool, intent.id) == {
        "status": "PENDING",
        "credits": 0,
        "attempts": [],
    }


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"signature": null}', "application/json"),
        ('{"signature": 5}', "application/json"),
        ('{"reference": "x"}', "application/json"),
        ("{", "application/json"),
        ("[]", "application/json"),
        ("{}", "text/plain"),
    ],
    ids=["null signature", "number", "unknown field", "not JSON", "not an object", "not JSON type"],
)
async def test_a_malformed_body_is_still_400_and_changes_nothing(
    rig: Rig, body: str, content_type: str
) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("eli")
    await rig.pay(intent)
    async with api_client(_services(rig, chain)) as client:
        resp = await client.post(
            _verify_url(intent.id),
            data=body,
            headers={**bearer("eli"), "Content-Type": content_type},
        )
        assert resp.status == 400
    assert chain.lookups == 0
    assert (await _written(rig.pool, intent.id))["status"] == "PENDING"


async def test_an_inflow_the_watcher_recorded_is_verified_without_a_chain_lookup(
    rig: Rig,
) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("fay", credits=2)
    signature = await rig.pay(intent)
    # As the watcher records a bound inflow it has not settled yet (e.g. the gate was shut).
    await rig.pool.execute(
        """INSERT INTO treasury_flows (signature, account, slot, amount, payer, refs, intent_id)
           VALUES ($1, $2, 1, $3, 'payer', $4, $5)""",
        signature,
        rig.info.treasury_token_account,
        intent.amount,
        [intent.reference],
        intent.id,
    )
    async with api_client(_services(rig, chain)) as client:
        resp = await client.post(_verify_url(intent.id), headers=bearer("fay"))
        assert resp.status == 200
        assert (await resp.json())["tx_signature"] == signature
    assert chain.lookups == 0
    assert await ledger.balance(rig.pool, "fay") == 2


async def test_an_underpayment_found_by_reference_answers_422_as_a_verify_does(rig: Rig) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("gus", credits=5)
    await rig.pay(intent, amount=intent.amount - 1)
    async with api_client(_services(rig, chain)) as client:
        resp = await client.post(_verify_url(intent.id), json={}, headers=bearer("gus"))
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "underpaid"
    assert await ledger.balance(rig.pool, "gus") == 0


async def test_empty_verifies_count_against_the_per_user_rate_limit(rig: Rig) -> None:
    chain = CountingChain(rig.rpc)
    intent = await rig.intent("hal")
    limited = _services(
        rig, chain, rate_limit_per_user_per_second=0.001, rate_limit_per_user_burst=1
    )
    async with api_client(limited) as client:
        first = await client.post(_verify_url(intent.id), headers=bearer("hal"))
        assert first.status == 202
        second = await client.post(_verify_url(intent.id), headers=bearer("hal"))
        assert second.status == 429
        assert (await second.json())["error"]["code"] == "rate_limited"
    assert chain.lookups == 1
