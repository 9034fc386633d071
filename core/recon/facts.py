"""Reconciliation facts: what the SQL reads per intent, signature, user, ledger transaction
and treasury payment, as plain values for the pure rules in `core.recon_rules`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class IntentFacts:
    """An intent with its purchase credit and the corrections that name it."""

    intent_id: str
    user_id: str
    status: str
    credits: int
    amount: int
    received_amount: int | None
    tx_signature: str | None
    created_at: datetime
    purchase_tx: int | None
    purchase_signature: str | None
    credited_user: str | None  # the user account the purchase credited
    credited: int  # credits the purchase moved to users (0 without one)
    purchase_reversed: bool
    corrections: int  # net credits of applied corrections naming it, and of reversals
    adjusted: bool  # an applied adjustment (any kind) names the intent or its signature


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """Failed or flagged verification attempts of one intent with one signature."""

    intent_id: str
    user_id: str
    intent_status: str
    intent_signature: str | None  # the signature that confirmed the intent, if any
    signature: str
    outcome: str  # "rejected" or "confirmed"
    codes: tuple[str, ...]
    adjusted: bool  # an applied adjustment names this signature
    # the intent this signature's payment credited, when it is another one: the money is
    # accounted for there (someone's transaction pasted into this intent)
    credited_elsewhere: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureFacts:
    """What was credited on the strength of one transaction signature."""

    signature: str
    intent_ids: tuple[str, ...]  # intents the signature is claimed to have paid
    user_ids: tuple[str, ...]
    paid: int  # credits one payment buys: the largest claimed intent (or adjustment)
    granted: int  # net credits of purchases, corrections and reversals tied to it
    credit_sources: int  # positive credits tied to it (purchases, adjustments)


@dataclass(frozen=True, slots=True)
class BalanceFacts:
    user_id: str
    cached: int
    entries: int  # the sum of the user's ledger entries


@dataclass(frozen=True, slots=True)
class TxFacts:
    ledger_tx: int
    total: int
    entries: int
    user_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """A payment seen reaching the treasury, with what the database knows of it."""

    signature: str
    tokens: int
    intent_ids: tuple[str, ...]  # intents whose reference or memo it carries
    user_ids: tuple[str, ...]
    credited: bool  # an intent or purchase credit holds the signature
    adjusted: bool  # an applied adjustment names the signature
    where: str  # how it was found: "reference of intent ..." / "treasury history"
