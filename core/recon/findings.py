"""A reconciliation finding: its kind, its severity and its stable fingerprint.

Sign conventions: a finding's `credits` are owed to users when positive, given in excess
when negative; its `tokens` are base units that reached the treasury without a credit. The
fingerprint is the same for the same anomaly run after run (sha256 of the kind and the
sorted subject ids, never of amounts).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class FindingKind(enum.StrEnum):
    UNBALANCED_TRANSACTION = "unbalanced_transaction"
    LEDGER_NOT_ZERO_SUM = "ledger_not_zero_sum"
    BALANCE_MISMATCH = "balance_mismatch"
    NEGATIVE_BALANCE = "negative_balance"
    DUPLICATE_SIGNATURE = "duplicate_signature"
    CONFIRMED_WITHOUT_CREDIT = "confirmed_without_credit"
    CREDIT_WITHOUT_CONFIRMED_INTENT = "credit_without_confirmed_intent"
    PURCHASE_MISMATCH = "purchase_mismatch"
    STALE_PENDING = "stale_pending"
    FAILED_THEN_SUCCEEDED = "failed_then_succeeded"
    OVERPAYMENT = "overpayment"
    LATE_PAYMENT = "late_payment"
    UNMATCHED_PAYMENT = "unmatched_payment"
    CHAIN_UNCHECKED = "chain_unchecked"
    # the books tied to the chain (`core.recon.ties`)
    TREASURY_BALANCE_DRIFT = "treasury_balance_drift"
    UNCREDITED_INFLOW = "uncredited_inflow"
    TREASURY_OUTFLOW = "treasury_outflow"


class Severity(enum.StrEnum):
    CRITICAL = "critical"  # money or ledger integrity is wrong
    WARNING = "warning"  # needs a person: an anomaly the runbook lists
    INFO = "info"  # worth knowing, settled by policy: listed, not drift


# Rejections after which the payer's tokens may sit at the treasury uncredited.
MONEY_AT_TREASURY_CODES = frozenset(
    {"underpaid", "paid_after_expiry", "paid_to_wallet_not_token_account", "unbound_payment"}
)
# Adjustments that correct a purchase credit (count in the applied credits of an intent).
CORRECTION_KINDS = frozenset({"missing_credit", "duplicate_reversal"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly. Same anomaly, same fingerprint: alerting posts each fingerprint once."""

    fingerprint: str
    kind: FindingKind
    severity: Severity
    user_ids: tuple[str, ...]
    signatures: tuple[str, ...]
    intent_ids: tuple[str, ...]
    credits: int
    tokens: int
    detail: str
    ledger_tx_ids: tuple[int, ...] = ()

    @property
    def blocking(self) -> bool:
        """Counts against zero drift (everything but info)."""
        return self.severity != Severity.INFO

    @property
    def short(self) -> str:
        """The fingerprint as people type it: its first 12 characters."""
        return self.fingerprint[:12]


def fingerprint(kind: str, subjects: Iterable[str]) -> str:
    """sha256 hex of the kind and the sorted, distinct subject ids ("intent:<id>", ...)."""
    text = "|".join([kind, *sorted(set(subjects))])
    return hashlib.sha256(text.encode()).hexdigest()


def finding(
    kind: FindingKind,
    severity: Severity,
    *,
    detail: str,
    user_ids: Sequence[str | None] = (),
    signatures: Sequence[str | None] = (),
    intent_ids: Sequence[str | None] = (),
    ledger_tx_ids: Sequence[int] = (),
    credits: int = 0,
    tokens: int = 0,
    subjects: Sequence[str] | None = None,
) -> Finding:
    """A finding; its fingerprint covers every subject id unless `subjects` narrows it."""
    users = _ids(user_ids)
    sigs = _ids(signatures)
    intents = _ids(intent_ids)
    txs = tuple(sorted(set(ledger_tx_ids)))
    if subjects is None:
        subjects = [
            *(f"user:{u}" for u in users),
            *(f"sig:{s}" for s in sigs),
            *(f"intent:{i}" for i in intents),
            *(f"ltx:{t}" for t in txs),
        ]
    return Finding(
        fingerprint=fingerprint(kind.value, subjects),
        kind=kind,
        severity=severity,
        user_ids=users,
        signatures=sigs,
        intent_ids=intents,
        credits=credits,
        tokens=tokens,
        detail=detail,
        ledger_tx_ids=txs,
    )


def _ids(values: Sequence[str | None]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if v}))
