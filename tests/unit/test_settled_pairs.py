"""The settled pairs: only confirmed intents under their own signature, bounded LRU."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core.purchases.intents import Intent, IntentStatus
from core.purchases.settled import SETTLED_CAPACITY, SettledPairs

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


def _as_read(i: int) -> Intent:
    """A confirmed intent as a row read from the database gives it: every string its own
    object, the shared terms included."""

    def fresh(text: str) -> str:
        return "".join(list(text))  # equal, but not the same object

    return Intent(
        id=uuid.uuid4(),
        user_id=f"user-{i % 100}",
        credits=100,
        amount=1_000_000,
        mint=fresh("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"),
        token_program=fresh("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"),
        recipient=fresh("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"),
        recipient_token_account=fresh("8xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"),
        reference=f"{i:044d}",
        memo=str(uuid.uuid4()),
        wallet=None,
        status=IntentStatus.CONFIRMED,
        tx_signature=f"{i:088d}",
        received_amount=1_000_000,
        reject_code=None,
        created_at=datetime.now(UTC),
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        confirmed_at=datetime.now(UTC),
    )


def test_a_remembered_pair_keeps_the_shared_terms_once_and_is_equal_to_what_was_read() -> None:
    pairs = SettledPairs()
    a, b = _as_read(1), _as_read(2)
    assert a.mint is not b.mint
    pairs.remember(a)
    pairs.remember(b)
    kept_a, kept_b = pairs.get(a.id, a.tx_signature or ""), pairs.get(b.id, b.tx_signature or "")
    assert kept_a == a
    assert kept_b == b
    for term in ("mint", "token_program", "recipient", "recipient_token_account"):
        assert getattr(kept_a, term) is getattr(kept_b, term), term


def test_a_full_cache_of_settled_pairs_stays_under_50_mb() -> None:
    """SETTLED_CAPACITY pairs as rows read them (settled.py says what one costs)."""
    import tracemalloc

    pairs = SettledPairs(capacity=5_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        intents = [_as_read(i) for i in range(5_000)]
        for intent in intents:
            pairs.remember(intent)
        del intents, intent  # what the pairs keep is all that is left of the rows
        per_pair = (tracemalloc.get_traced_memory()[0] - before) / 5_000
    finally:
        tracemalloc.stop()
    assert len(pairs) == 5_000
    assert per_pair * SETTLED_CAPACITY < 50e6, f"{per_pair:.0f} bytes a pair"
