"""The double-entry credits ledger: what each kind of ledger transaction posts.

Every ledger transaction is a list of postings that sums to zero: a user account against a
system account. The database refuses anything else (see migration 0001); these builders are
the only place the application decides the postings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class LedgerKind(enum.StrEnum):
    PURCHASE = "purchase"
    DEBIT = "debit"
    ADJUSTMENT = "adjustment"
    REVERSAL = "reversal"


TOKEN_SALES = "system:token_sales"
SPEND = "system:spend"
ADJUSTMENTS = "system:adjustments"


def user_account(user_id: str) -> str:
    return f"user:{user_id}"


@dataclass(frozen=True, slots=True)
class Posting:
    account: str  # account name: "user:<id>" or "system:<name>"
    amount: int  # credits; positive raises the account's balance


def _balanced(postings: list[Posting]) -> list[Posting]:
    if sum(p.amount for p in postings) != 0 or any(p.amount == 0 for p in postings):
        raise ValueError(f"unbalanced postings: {postings}")
    return postings


def purchase_postings(user_id: str, credits: int) -> list[Posting]:
    """A confirmed payment: the user gains `credits`, token sales gives them."""
    if credits <= 0:
        raise ValueError("a purchase credits a positive amount")
    return _balanced([Posting(user_account(user_id), credits), Posting(TOKEN_SALES, -credits)])


def debit_postings(user_id: str, credits: int) -> list[Posting]:
    """Credits spent in another service: the user loses `credits` to spend."""
    if credits <= 0:
        raise ValueError("a debit takes a positive amount")
    return _balanced([Posting(user_account(user_id), -credits), Posting(SPEND, credits)])


def adjustment_postings(user_id: str, credits: int) -> list[Posting]:
    """An approved manual correction, signed: positive gives credits, negative takes them."""
    if credits == 0:
        raise ValueError("an adjustment moves a non-zero amount")
    return _balanced([Posting(user_account(user_id), credits), Posting(ADJUSTMENTS, -credits)])


@dataclass(frozen=True, slots=True)
class LedgerKey:
    """What makes a ledger transaction happen once: scope, principal and key, kept apart.

    Each is stored in its own column (migration 0010), so no choice of principal or key can
    reach another's: service `svc:a` with key `b` and service `svc` with key `a:b` differ,
    and no service can take an adjustment's key.
    """

    scope: str  # "debit", "adjustment"
    principal: str  # who chose the key: the service's `sub`; "" for the service's own keys
    key: str

    @classmethod
    def debit(cls, service: str, key: str) -> LedgerKey:
        return cls("debit", service, key)

    @classmethod
    def adjustment(cls, adjustment_id: int) -> LedgerKey:
        return cls("adjustment", "", str(adjustment_id))


@dataclass(frozen=True, slots=True)
class Entry:
    transaction_id: int
    kind: LedgerKind
    amount: int
    description: str
    created_at: datetime
