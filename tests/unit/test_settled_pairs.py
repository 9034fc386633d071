"""The settled pairs: only confirmed intents under their own signature, bounded LRU."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core.purchases.intents import Intent, IntentStatus
from core.purchases.settled import SettledPairs

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _intent(status: IntentStatus = IntentStatus.CONFIRMED, sig: str | None = "SIG") -> Intent:
    return Intent(
        id=uuid.uuid4(),
        user_id="alice",
        credits=1,
        amount=10,
        mint="M",
        token_program="T",
        recipient="R",
        recipient_token_account="RA",
        reference="REF",
        memo="memo",
        wallet=None,
        status=status,
        tx_signature=sig,
        received_amount=10 if sig else None,
        reject_code=None,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
        confirmed_at=NOW if sig else None,
    )


def test_only_confirmed_intents_under_their_signature_are_remembered() -> None:
    pairs = SettledPairs()
    pending = _intent(IntentStatus.PENDING, None)
    pairs.remember(pending)
    assert len(pairs) == 0
    confirmed = _intent()
    pairs.remember(confirmed)
    assert pairs.get(confirmed.id, "SIG") == confirmed
    assert pairs.get(confirmed.id, "OTHER") is None
    assert pairs.get(uuid.uuid4(), "SIG") is None


def test_the_least_recently_used_pair_goes_first() -> None:
    pairs = SettledPairs(capacity=2)
    a, b, c = _intent(), _intent(), replace(_intent(), tx_signature="SIG")
    pairs.remember(a)
    pairs.remember(b)
    assert pairs.get(a.id, "SIG") is not None  # a is now the most recent
    pairs.remember(c)
    assert len(pairs) == 2
    assert pairs.get(b.id, "SIG") is None
    assert pairs.get(a.id, "SIG") is not None
    assert pairs.get(c.id, "SIG") is not None
