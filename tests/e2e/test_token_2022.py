"""Token-2022 with a 1% transfer fee: what arrives at the treasury is what counts."""

from __future__ import annotations

from typing import Any

import pytest

from localnet.tokens import TransferFee
from tests.e2e.facts import assert_credited_once, assert_not_credited, new_user
from tests.e2e.harness import TOKEN_2022_FEE_BPS, Chain, Service

FEE = TransferFee(TOKEN_2022_FEE_BPS, 2**64 - 1)


def gross_up(net: int) -> int:
    """The smallest transfer that still delivers `net` after the fee."""
    gross = net * 10_000 // (10_000 - FEE.basis_points)
    while gross - FEE.fee_for(gross) < net:
        gross += 1
    return gross


async def pay(chain: Chain, intent: dict[str, Any], amount: int) -> str:
    signature = await chain.wallet.pay(intent, decimals=chain.info.decimals, amount=amount)
    status = await chain.wallet.wait_finalized(signature)
    assert status["err"] is None, status
    return signature


async def test_paying_the_price_before_the_fee_is_underpaid(
    fee_chain: Chain, fee_service: Service
) -> None:
    assert fee_chain.info.token_program == "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
    user = new_user("fee-under")
    intent = await fee_service.create_intent(user, credits=5)
    assert intent["token_program"] == fee_chain.info.token_program
    amount = int(intent["amount"])

    signature = await pay(fee_chain, intent, amount)
    answer = await fee_service.verify(user, intent, signature)

    assert answer.status == 422, answer
    assert answer.error_code == "underpaid"
    assert str(amount - FEE.fee_for(amount)) in answer.body["error"]["message"]
    # Short of the price, the intent stays open: a top-up may still complete it.
    found = await assert_not_credited(fee_service, intent, status="PENDING")
    assert found.reject_code is None
    assert found.attempts == [("rejected", "underpaid")]


@pytest.mark.parametrize(
    ("extra", "flag"), [(0, None), (1_000, "overpaid")], ids=["exactly-net", "more-than-net"]
)
async def test_paying_the_fee_on_top_credits(
    fee_chain: Chain, fee_service: Service, extra: int, flag: str | None
) -> None:
    user = new_user("fee-gross")
    intent = await fee_service.create_intent(user, credits=5)
    amount = int(intent["amount"])
    gross = gross_up(amount) + extra

    signature = await pay(fee_chain, intent, gross)
    answer = await fee_service.verify(user, intent, signature)

    assert answer.status == 200, answer
    assert answer.body["credited"] == 5
    assert answer.body["balance"] == 5
    found = await assert_credited_once(fee_service, intent, signature)
    assert found.received_amount == gross - FEE.fee_for(gross)
    assert (found.received_amount > amount) is (flag == "overpaid")
    assert found.attempts == [("confirmed", flag)]
