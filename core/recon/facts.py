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
    # a short payment the watcher counted towards the top-up that confirmed the intent
    in_topup: bool = False


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


@dataclass(frozen=True, slots=True)
class FlowFacts:
    """A change to the treasury token account the watcher recorded, with what the database
    knows of it: the intent it is bound to (if any) and what settles it by hand."""

    signature: str
    slot: int
    amount: int  # base units; > 0 inflow, < 0 outflow
    payer: str
    intent_id: str | None
    user_id: str | None
    intent_status: str | None
    intent_signature: str | None  # the signature that confirmed the intent, if any
    intent_created_at: datetime | None
    intent_expires_at: datetime | None
    credited: bool  # a purchase credit holds the signature
    adjusted: bool  # an applied adjustment names the signature
    explained: bool  # a closed incident's record names the signature
    # a valid but short payment whose intent a later payment completed: the credit's
    # received amount covers every part (the watcher's top-up)
    in_topup: bool = False


@dataclass(frozen=True, slots=True)
class BalanceTie:
    """The treasury token account's balance on chain beside the books: the balance when
    watching began plus every flow recorded since. Compared only when the watcher had
    recorded everything up to the balance's slot; otherwise `unchecked` says why."""

    account: str
    start_balance: int
    recorded: int  # the sum of the recorded flows
    cursor_signature: str | None  # the newest recorded signature
    cursor_slot: int | None
    on_chain: int | None = None
    slot: int | None = None  # where the balance was read
    unchecked: str | None = None  # e.g. "watcher behind: <signature> not recorded yet"

    @property
    def expected(self) -> int:
        return self.start_balance + self.recorded

    @property
    def compared(self) -> bool:
        return self.unchecked is None and self.on_chain is not None

    def to_json(self) -> dict[str, object]:
        return {
            "account": self.account,
            "compared": self.compared,
            "unchecked": self.unchecked,
            "on_chain": None if self.on_chain is None else str(self.on_chain),
            "slot": self.slot,
            "expected": str(self.expected),
            "start_balance": str(self.start_balance),
            "recorded": str(self.recorded),
            "cursor_signature": self.cursor_signature,
            "cursor_slot": self.cursor_slot,
        }
