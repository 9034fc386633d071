"""Block time against the intent's lifetime, with real transactions on a chain whose clock is
moved: before the intent was created, after it expired (within and beyond the grace).

The local chain's time only moves forward, and a fresh one starts at the wall clock, so each
test has its own chain whose clock starts an hour behind the service's
(`tests/e2e/lagging_chain.py`): a payment made at once carries a block time an hour before
the intent; `surfnet_timeTravel` then moves the chain to any later moment. The intents live
30 s with a 60 s grace. The three stacks start together (see `enter_concurrently`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.e2e.facts import assert_credited_once, assert_not_credited, new_user, session_database
from tests.e2e.harness import Service, enter_concurrently, running_stack

if TYPE_CHECKING:
    from tests.conftest import DatabaseFactory

LAG_SECONDS = 3600
TTL_SECONDS = 30
GRACE_SECONDS = 60
STACKS = ("before", "late", "expired")


@pytest.fixture(scope="module")
async def lagging(
    http: aiohttp.ClientSession,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Service]]:
    """One service on its own lagging chain per test, all started at once."""
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(session_database(database_factory)) for _ in STACKS]
        services = await enter_concurrently(
            stack,
            [
                running_stack(
                    tmp_path_factory.mktemp(f"lagging-{name}"),
                    http,
                    url,
                    chain_module="tests.e2e.lagging_chain",
                    chain_args=("--lag-seconds", str(LAG_SECONDS)),
                    PAYOPS_INTENT_TTL_SECONDS=str(TTL_SECONDS),
                    PAYOPS_EXPIRY_GRACE_SECONDS=str(GRACE_SECONDS),
                )
                for name, url in zip(STACKS, urls, strict=True)
            ],
        )
        yield dict(zip(STACKS, services, strict=True))


async def pay(service: Service, intent: dict[str, Any]) -> str:
    chain = service.chain
    signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
    await chain.finalized(signature)
    return signature


def expires_at(intent: dict[str, Any]) -> float:
    return datetime.fromisoformat(intent["expires_at"]).timestamp()


async def test_a_payment_made_before_the_intent_existed_is_rejected(
    lagging: dict[str, Service],
) -> None:
    service = lagging["before"]
    user = new_user("before")
    intent = await service.create_intent(user)
    signature = await pay(service, intent)

    answer = await service.verify(user, intent, signature)

    assert answer.status == 422, answer
    assert answer.error_code == "paid_before_intent_created"
    found = await assert_not_credited(service, intent)  # someone else's old payment
    assert found.attempts == [("rejected", "paid_before_intent_created")]


async def test_a_payment_after_expiry_within_the_grace_credits_and_is_flagged_late(
    lagging: dict[str, Service],
) -> None:
    service = lagging["late"]
    user = new_user("late")
    intent = await service.create_intent(user)
    await service.chain.travel_to(expires_at(intent) + GRACE_SECONDS / 2)
    signature = await pay(service, intent)

    answer = await service.verify(user, intent, signature)

    assert answer.status == 200, answer
    assert answer.body["balance"] == intent["credits"]
    found = await assert_credited_once(service, intent, signature)
    assert found.attempts == [("confirmed", "late")]


async def test_a_payment_after_the_grace_is_rejected_and_closes_the_intent(
    lagging: dict[str, Service],
) -> None:
    service = lagging["expired"]
    user = new_user("expired")
    intent = await service.create_intent(user)
    await service.chain.travel_to(expires_at(intent) + GRACE_SECONDS + 30)
    signature = await pay(service, intent)

    answer = await service.verify(user, intent, signature)

    assert answer.status == 422, answer
    assert answer.error_code == "paid_after_expiry"
    found = await assert_not_credited(service, intent, status="REJECTED")
    assert found.reject_code == "paid_after_expiry"
    assert found.attempts == [("rejected", "paid_after_expiry")]
    again = await service.verify(user, intent, signature)
    assert again.status == 409, again
    assert again.error_code == "intent_rejected"
