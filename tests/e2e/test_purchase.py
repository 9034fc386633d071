"""A whole purchase through the real processes: intent, SPL transfer on chain, verify, credit."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.e2e.facts import assert_credited_once, assert_not_credited, new_user
from tests.e2e.harness import Chain, Service


async def pay(chain: Chain, intent: dict[str, object]) -> str:
    signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
    status = await chain.wallet.wait_finalized(signature)
    assert status["err"] is None, status
    return signature


async def test_paying_with_the_reference_credits_the_intent_once(
    chain: Chain, service: Service
) -> None:
    user = new_user("happy")
    intent = await service.create_intent(user, credits=7)
    assert intent["status"] == "PENDING"
    assert intent["mint"] == chain.info.mint
    assert intent["recipient"] == chain.info.treasury_owner
    assert intent["recipient_token_account"] == chain.info.treasury_token_account
    assert intent["amount"] == str(7 * 10_000)
    await assert_not_credited(service, intent)

    signature = await pay(chain, intent)
    answer = await service.verify(user, intent, signature)

    assert answer.status == 200, answer
    assert answer.body["status"] == "CONFIRMED"
    assert answer.body["tx_signature"] == signature
    assert answer.body["credited"] == 7
    assert answer.body["balance"] == 7
    assert answer.body["already_credited"] is False
    found = await assert_credited_once(service, intent, signature)
    assert found.received_amount == 7 * 10_000
    assert found.attempts == [("confirmed", None)]
    audited = await service.pool.fetch(
        "SELECT action, actor, source FROM audit_log WHERE subject = $1 ORDER BY id",
        f"intent:{intent['id']}",
    )
    assert [tuple(r) for r in audited] == [
        ("intent.create", user, "api"),
        ("intent.confirm", user, "api"),
    ]

    credits = await service.credits(user)
    assert credits["balance"] == 7
    assert [(e["kind"], e["amount"]) for e in credits["entries"]] == [("purchase", 7)]
    shown = await service.request("GET", f"/v1/purchase-intents/{intent['id']}", user=user)
    assert shown.status == 200
    assert shown.body["status"] == "CONFIRMED"

    again = await service.verify(user, intent, signature)
    assert again.status == 200
    assert again.body["already_credited"] is True
    assert again.body["balance"] == 7
    found = await assert_credited_once(service, intent, signature)
    assert found.attempts == [("confirmed", None), ("duplicate", None)]


async def test_a_hundred_concurrent_verifies_credit_once(chain: Chain, service: Service) -> None:
    user = new_user("stampede")
    intent = await service.create_intent(user, credits=3)
    signature = await pay(chain, intent)

    answers = await asyncio.gather(*(service.verify(user, intent, signature) for _ in range(100)))

    assert Counter(a.status for a in answers) == {200: 100}, [a for a in answers if a.status != 200]
    assert Counter(a.body["already_credited"] for a in answers) == {True: 99, False: 1}
    assert {a.body["balance"] for a in answers} == {3}
    found = await assert_credited_once(service, intent, signature)
    assert len(found.attempts) == 100
    assert Counter(outcome for outcome, _ in found.attempts) == {"confirmed": 1, "duplicate": 99}
    assert (await service.credits(user))["balance"] == 3
