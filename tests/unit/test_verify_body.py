"""The verify's confirmed answer is built as a plain dict; it must stay what the documented
model (`VerifyConfirmedBody`, in the OpenAPI document) says, byte for byte."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from api.http import dumps
from api.routes_intents import confirmed_body
from api.schemas import VerifyConfirmedBody
from core.config import load_settings
from core.purchases import Credited, IntentStatus, new_intent
from tests.support import MINT, TREASURY, signature

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PAYMENT = load_settings(
    token_mint=MINT, treasury_owner=TREASURY, price_per_credit=10_000
).payment_config()


@pytest.mark.parametrize("duplicate", [False, True])
def test_the_confirmed_body_is_the_models_dump(duplicate: bool) -> None:
    intent = new_intent(user_id="u-1", credits=7, wallet=None, payment=PAYMENT, now=NOW)
    confirmed = replace(intent, status=IntentStatus.CONFIRMED, tx_signature=signature())
    body = confirmed_body(Credited(confirmed, 7, 1_234, duplicate))

    model = VerifyConfirmedBody.model_validate(body, strict=True)
    assert model.model_dump(mode="json") == body
    assert list(VerifyConfirmedBody.model_fields) == list(body)  # same keys, same order
    assert dumps(body) == dumps(model.model_dump(mode="json"))
    assert body["already_credited"] is duplicate
