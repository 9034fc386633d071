"""Pure intent rules: pricing, the Solana Pay URL, signature parsing, verify pre-checks."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core.chain.signatures import parse_signature
from core.chain.verdict import RejectCode
from core.config import load_settings
from core.errors import Conflict, InvalidInput
from core.ledger import adjustment_postings, debit_postings, purchase_postings
from core.purchases import (
    IntentStatus,
    Precheck,
    format_token_amount,
    new_intent,
    precheck,
    rejection_closes_intent,
    solana_pay_url,
)
from tests.support import MINT, TREASURY, signature

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PAYMENT = load_settings(
    token_mint=MINT, treasury_owner=TREASURY, price_per_credit=10_000
).payment_config()


@pytest.mark.parametrize(
    ("units", "decimals", "text"),
    [
        (1, 6, "0.000001"),
        (10_000, 6, "0.01"),
        (4_500_000, 6, "4.5"),
        (1_000_000, 6, "1"),
        (123, 0, "123"),
        (18446744073709551615, 9, "18446744073.709551615"),
        (10**20, 18, "100"),
        (5, 2, "0.05"),
    ],
)
def test_format_token_amount_is_exact(units: int, decimals: int, text: str) -> None:
    assert format_token_amount(units, decimals) == text


def test_new_intent_prices_from_configuration() -> None:
    intent = new_intent(user_id="u", credits=7, wallet=None, payment=PAYMENT, now=NOW)
    assert intent.amount == 70_000
    assert intent.status is IntentStatus.PENDING
    assert intent.memo == str(intent.id)
    assert (intent.expires_at - intent.created_at).total_seconds() == PAYMENT.intent_ttl_seconds
    assert intent.recipient_token_account == PAYMENT.treasury_token_account


@pytest.mark.parametrize("credits", [0, -1, 1_000_001, True, 2.0])
def test_new_intent_refuses_bad_credits(credits: object) -> None:
    with pytest.raises(InvalidInput):
        new_intent(user_id="u", credits=credits, wallet=None, payment=PAYMENT, now=NOW)  # type: ignore[arg-type]


def test_new_intent_refuses_a_price_beyond_u64() -> None:
    dear = replace(PAYMENT, price_per_credit=2**63, max_credits_per_intent=10)
    with pytest.raises(InvalidInput, match="exceeds"):
        new_intent(user_id="u", credits=3, wallet=None, payment=dear, now=NOW)


def test_solana_pay_url_follows_the_spec() -> None:
    intent = new_intent(
        user_id="u", credits=1, wallet=None, payment=PAYMENT, now=NOW, intent_id=uuid.UUID(int=1)
    )
    assert solana_pay_url(intent, 6) == (
        f"solana:{TREASURY}?amount=0.01&spl-token={MINT}&reference={intent.reference}"
        f"&memo=00000000-0000-0000-0000-000000000001"
    )


def test_solana_pay_url_says_who_asks_and_what_for() -> None:
    intent = new_intent(
        user_id="u", credits=3, wallet=None, payment=PAYMENT, now=NOW, intent_id=uuid.UUID(int=1)
    )
    url = solana_pay_url(intent, 6, label="Acme & Co", message="{credits} credits at Acme")
    assert url == (
        f"solana:{TREASURY}?amount=0.03&spl-token={MINT}&reference={intent.reference}"
        "&label=Acme%20%26%20Co&message=3%20credits%20at%20Acme"
        "&memo=00000000-0000-0000-0000-000000000001"
    )


def test_parse_signature_canonicalises_and_refuses_garbage() -> None:
    sig = signature()
    assert parse_signature(sig) == sig
    for bad in ["", "x" * 88, "0" * 88, 1, None, "1" * 63, "1" * 100]:
        with pytest.raises(InvalidInput):
            parse_signature(bad)


def test_precheck_table() -> None:
    base = new_intent(user_id="u", credits=1, wallet=None, payment=PAYMENT, now=NOW)
    sig, other = signature(), signature()
    confirmed = replace(base, status=IntentStatus.CONFIRMED, tx_signature=sig)
    assert precheck(base, sig) is Precheck.ASK_CHAIN
    assert precheck(replace(base, status=IntentStatus.EXPIRED), sig) is Precheck.ASK_CHAIN
    assert precheck(confirmed, sig) is Precheck.ALREADY_CREDITED
    with pytest.raises(Conflict, match="another transaction"):
        precheck(confirmed, other)
    with pytest.raises(Conflict) as info:
        precheck(replace(base, status=IntentStatus.REJECTED, reject_code="underpaid"), sig)
    assert info.value.code == "intent_rejected"


@pytest.mark.parametrize(
    ("code", "closes"),
    [
        (RejectCode.UNDERPAID, False),  # a top-up may still complete it
        (RejectCode.EXPIRED, True),
        (RejectCode.UNBOUND_PAYMENT, False),
        (RejectCode.TX_FAILED, False),
        (RejectCode.WRONG_MINT, False),
        (RejectCode.NO_TRANSFER, False),
    ],
)
def test_which_rejections_close_the_intent(code: RejectCode, closes: bool) -> None:
    assert rejection_closes_intent(code) is closes


@pytest.mark.parametrize("build", [purchase_postings, debit_postings])
def test_postings_sum_to_zero_and_refuse_non_positive(build: object) -> None:
    assert callable(build)
    postings = build("u", 5)
    assert sum(p.amount for p in postings) == 0
    with pytest.raises(ValueError, match="positive"):
        build("u", 0)


def test_adjustments_are_signed() -> None:
    assert [p.amount for p in adjustment_postings("u", -3)] == [-3, 3]
    with pytest.raises(ValueError, match="non-zero"):
        adjustment_postings("u", 0)
