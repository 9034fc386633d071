"""When the chain cannot answer yet: not final, frozen, gone. Never a rejection, never a
credit: the intent stays PENDING, the answer is 202 with Retry-After, and the next verify
after the chain recovers credits exactly once."""

from __future__ import annotations

import asyncio
import signal

from tests.e2e.facts import assert_credited_once, assert_not_credited, new_user
from tests.e2e.harness import Chain, Service

# The service's RPC budget: 2 attempts of 1 s plus one short backoff, and some slack for a
# loaded machine.
RPC_GIVE_UP_SECONDS = 6.0


async def pay_finalized(chain: Chain, intent: dict[str, object]) -> str:
    signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
    await chain.finalized(signature)
    return signature


async def test_a_payment_not_yet_final_stays_pending_until_it_is(
    chain: Chain, service: Service
) -> None:
    user = new_user("not-final")
    intent = await service.create_intent(user)
    await chain.call("localnet_holdFinality")
    try:
        signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
        status = await chain.wait_seen(signature)
        assert status["confirmationStatus"] == "confirmed", status

        answer = await service.verify(user, intent, signature)

        assert answer.status == 202, answer
        assert answer.body["status"] == "PENDING"
        assert answer.body["reason"] == "tx_not_final"
        assert int(answer.headers["Retry-After"]) == answer.body["retry_after"] > 0
        found = await assert_not_credited(service, intent)
        assert found.attempts == [("pending", "tx_not_final")]
    finally:
        await chain.call("localnet_releaseFinality")

    await chain.finalized(signature)
    answer = await service.verify(user, intent, signature)

    assert answer.status == 200, answer
    assert answer.body["already_credited"] is False
    assert answer.body["balance"] == intent["credits"]
    found = await assert_credited_once(service, intent, signature)
    assert found.attempts == [("pending", "tx_not_final"), ("confirmed", None)]


async def test_a_frozen_chain_leaves_the_intent_pending_until_it_thaws(
    chain: Chain, service: Service
) -> None:
    user = new_user("frozen")
    intent = await service.create_intent(user)
    signature = await pay_finalized(chain, intent)
    loop = asyncio.get_running_loop()

    chain.proc.send(signal.SIGSTOP)
    try:
        started = loop.time()
        answer, ready = await asyncio.gather(
            service.verify(user, intent, signature), service.readyz()
        )
        elapsed = loop.time() - started
    finally:
        chain.proc.send(signal.SIGCONT)

    assert answer.status == 202, answer
    assert answer.body["reason"] == "rpc_unavailable"
    assert "Retry-After" in answer.headers
    assert elapsed < RPC_GIVE_UP_SECONDS
    assert ready.status == 503, ready
    assert ready.body["checks"]["database"] == "ok"
    assert ready.body["checks"]["solana_rpc"] != "ok"
    found = await assert_not_credited(service, intent)
    assert found.attempts == [("pending", "rpc_unavailable")]

    answer = await service.verify(user, intent, signature)

    assert answer.status == 200, answer
    assert answer.body["already_credited"] is False
    found = await assert_credited_once(service, intent, signature)
    assert found.attempts == [("pending", "rpc_unavailable"), ("confirmed", None)]
    assert (await service.readyz()).status == 200


async def test_a_dead_chain_leaves_the_intent_pending_and_the_service_not_ready(
    own_chain: Chain, own_service: Service
) -> None:
    user = new_user("dead-chain")
    intent = await own_service.create_intent(user)
    signature = await pay_finalized(own_chain, intent)
    own_chain.proc.send(signal.SIGKILL)
    assert await own_chain.proc.wait_exit() == -signal.SIGKILL

    answer = await own_service.verify(user, intent, signature)

    assert answer.status == 202, answer
    assert answer.body["reason"] == "rpc_unavailable"
    found = await assert_not_credited(own_service, intent)
    assert found.attempts == [("pending", "rpc_unavailable")]
    ready = await own_service.readyz()
    assert ready.status == 503, ready
    assert ready.body["status"] == "unavailable"
    assert ready.body["checks"]["database"] == "ok"
    assert ready.body["checks"]["solana_rpc"] != "ok"
    # the service itself still answers, and still stops cleanly (checked by the fixture)
    assert (await own_service.request("GET", "/healthz")).status == 200
