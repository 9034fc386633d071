"""The recovery sweep's pure decisions: when an intent may be closed, and how."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.config import PaymentConfig
from core.purchases import Looked, Settle, deadline, new_intent, settle

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
PAYMENT = PaymentConfig(
    mint="M",
    token_program="P",
    decimals=6,
    treasury_owner="T",
    treasury_token_account="A",
    price_per_credit=10,
    max_credits_per_intent=100,
    intent_ttl_seconds=900,
)


@pytest.mark.parametrize(
    ("looked", "past_deadline", "fate"),
    [
        (Looked(), False, Settle.KEEP),
        (Looked(), True, Settle.EXPIRE),
        (Looked(credited=True), True, Settle.KEEP),
        (Looked(pending=1), True, Settle.KEEP),
        (Looked(pending=1, refused=("wrong_mint",)), True, Settle.KEEP),
        (Looked(refused=("wrong_mint",)), False, Settle.KEEP),
        (Looked(refused=("wrong_mint",)), True, Settle.REJECT),
        (Looked(refused=("signature_already_used", "underpaid")), True, Settle.REJECT),
        (Looked(credited=True, refused=("intent_already_confirmed",)), True, Settle.KEEP),
    ],
)
def test_settle(looked: Looked, past_deadline: bool, fate: Settle) -> None:
    assert settle(looked, past_deadline=past_deadline) is fate


@pytest.mark.parametrize(
    ("sla", "grace", "after_creation"),
    [
        (timedelta(hours=1), timedelta(minutes=10), timedelta(hours=1)),
        # An SLA shorter than the TTL plus grace never closes an intent that can still be paid.
        (timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=25)),
        (timedelta(minutes=20), timedelta(0), timedelta(minutes=20)),
    ],
)
def test_deadline_is_the_sla_but_never_before_expiry_and_grace(
    sla: timedelta, grace: timedelta, after_creation: timedelta
) -> None:
    intent = new_intent(user_id="u", credits=1, wallet=None, payment=PAYMENT, now=T0)
    assert deadline(intent, sla, grace) == T0 + after_creation
