"""Reconciliation, the pure part: what the facts read from the database and the chain mean.

The SQL (`core.recon_sql`) reads facts per intent, signature, user and ledger transaction;
the functions here turn each into findings, with a fingerprint that is the same for the same
anomaly run after run (sha256 of the kind and the sorted subject ids, never of amounts).
`settle` compares a run's findings with those open before it (new, still open, resolved),
and `judge` gives the drift. Everything takes `now` where time matters; nothing does I/O.

Sign conventions: a finding's `credits` are owed to users when positive, given in excess
when negative; its `tokens` are base units that reached the treasury without a credit.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.recon.facts import (
    AttemptFacts,
    BalanceFacts,
    IntentFacts,
    PaymentFacts,
    SignatureFacts,
    TxFacts,
)


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


# --- classification ---------------------------------------------------------------------------


def intent_findings(f: IntentFacts, now: datetime, pending_sla: timedelta) -> list[Finding]:
    """Purchase credit vs intent, overpayment and stale PENDING, for one intent."""
    out: list[Finding] = []
    net = f.credited + f.corrections
    users, intents, subject = [f.user_id], [f.intent_id], [f"intent:{f.intent_id}"]
    if f.status == "CONFIRMED":
        if f.purchase_tx is None or f.purchase_reversed:
            if net < f.credits:
                why = (
                    "has no purchase credit" if f.purchase_tx is None else "had its credit reversed"
                )
                out.append(
                    finding(
                        FindingKind.CONFIRMED_WITHOUT_CREDIT,
                        Severity.CRITICAL,
                        detail=f"CONFIRMED intent {f.intent_id} {why}: {net} of {f.credits} "
                        f"credits applied (tx {f.tx_signature})",
                        signatures=[f.tx_signature],
                        credits=f.credits - net,
                        subjects=subject,
                        user_ids=users,
                        intent_ids=intents,
                    )
                )
        else:
            problems = []
            if f.credited_user != f.user_id:
                problems.append(f"credited user {f.credited_user}, not {f.user_id}")
            if f.purchase_signature != f.tx_signature:
                problems.append(f"signature {f.purchase_signature} vs intent's {f.tx_signature}")
            if f.credited != f.credits and net != f.credits:
                problems.append(f"{f.credited} credits for {f.credits}")
            if problems:
                out.append(
                    finding(
                        FindingKind.PURCHASE_MISMATCH,
                        Severity.CRITICAL,
                        detail=f"purchase credit {f.purchase_tx} of intent {f.intent_id}: "
                        + "; ".join(problems),
                        user_ids=[f.user_id, f.credited_user],
                        signatures=[f.tx_signature, f.purchase_signature],
                        intent_ids=[f.intent_id],
                        ledger_tx_ids=[f.purchase_tx],
                        credits=f.credits - net,
                        subjects=subject,
                    )
                )
        received = f.received_amount or 0
        if received > f.amount and not f.adjusted:
            out.append(
                finding(
                    FindingKind.OVERPAYMENT,
                    Severity.WARNING,
                    detail=f"intent {f.intent_id} received {received} base units for "
                    f"{f.amount}: {received - f.amount} over, uncredited",
                    signatures=[f.tx_signature],
                    tokens=received - f.amount,
                    subjects=subject,
                    user_ids=users,
                    intent_ids=intents,
                )
            )
    elif f.purchase_tx is not None and not f.purchase_reversed:
        out.append(
            finding(
                FindingKind.CREDIT_WITHOUT_CONFIRMED_INTENT,
                Severity.CRITICAL,
                detail=f"purchase credit {f.purchase_tx} of {f.credited} credits for intent "
                f"{f.intent_id}, which is {f.status}",
                signatures=[f.purchase_signature],
                ledger_tx_ids=[f.purchase_tx],
                credits=-f.credited,
                subjects=subject,
                user_ids=users,
                intent_ids=intents,
            )
        )
    if f.status == "PENDING" and now - f.created_at > pending_sla:
        out.append(
            finding(
                FindingKind.STALE_PENDING,
                Severity.WARNING,
                # no age in the text: the same finding reads the same run after run
                detail=f"intent {f.intent_id} PENDING since {f.created_at:%Y-%m-%d %H:%M} UTC "
                f"(SLA {_age(pending_sla)}), {f.credits} credits / {f.amount} base units",
                subjects=subject,
                user_ids=users,
                intent_ids=intents,
            )
        )
    return out


def attempt_findings(f: AttemptFacts) -> list[Finding]:
    """Failed verifications of an intent later confirmed; payments after expiry."""

    def one(kind: FindingKind, severity: Severity, detail: str) -> list[Finding]:
        return [
            finding(
                kind,
                severity,
                detail=detail,
                user_ids=[f.user_id],
                intent_ids=[f.intent_id],
                signatures=[f.signature],
                subjects=[f"intent:{f.intent_id}", f"sig:{f.signature}"],
            )
        ]

    if f.outcome == "confirmed":
        if any("late" in code.split(",") for code in f.codes):
            return one(
                FindingKind.LATE_PAYMENT,
                Severity.INFO,
                f"intent {f.intent_id} paid after expiry, credited within the grace period "
                f"by {f.signature}",
            )
        return []
    if f.adjusted:
        return []
    if "paid_after_expiry" in f.codes:
        return one(
            FindingKind.LATE_PAYMENT,
            Severity.WARNING,
            f"{f.signature} paid intent {f.intent_id} after expiry and its grace: rejected, "
            "not credited; needs a manual adjustment",
        )
    if f.intent_status == "CONFIRMED" and f.signature != f.intent_signature:
        if f.credited_elsewhere is not None:
            # the rejected transaction is another intent's payment, credited there: no
            # money of this user's is left at the treasury uncredited
            money, note = False, f"its payment credited intent {f.credited_elsewhere}"
        elif f.in_topup:
            money, note = False, "it was short, and counted in the top-up that credited it"
        else:
            money = bool(MONEY_AT_TREASURY_CODES.intersection(f.codes))
            note = (
                "the rejected payment may have reached the treasury too"
                if money
                else "no money reached the treasury with it"
            )
        return one(
            FindingKind.FAILED_THEN_SUCCEEDED,
            Severity.WARNING if money else Severity.INFO,
            f"intent {f.intent_id}: {f.signature} rejected ({', '.join(f.codes)}), then "
            f"confirmed by {f.intent_signature}; {note}",
        )
    return []


def signature_findings(f: SignatureFacts) -> list[Finding]:
    """Credits given more than once for one payment."""
    excess = f.granted - f.paid
    if f.credit_sources < 2 or excess <= 0:
        return []
    return [
        finding(
            FindingKind.DUPLICATE_SIGNATURE,
            Severity.CRITICAL,
            detail=f"{f.signature} paid {f.paid} credits but {f.granted} were credited for it "
            f"({f.credit_sources} credits; intents {', '.join(f.intent_ids) or '-'})",
            user_ids=f.user_ids,
            signatures=[f.signature],
            intent_ids=f.intent_ids,
            credits=-excess,
            subjects=[f"sig:{f.signature}"],
        )
    ]


def balance_findings(f: BalanceFacts) -> list[Finding]:
    """A cached balance that is not the sum of its entries; an unexpected negative balance."""
    out: list[Finding] = []
    subject = [f"user:{f.user_id}"]
    if f.cached != f.entries:
        out.append(
            finding(
                FindingKind.BALANCE_MISMATCH,
                Severity.CRITICAL,
                detail=f"cached balance of {f.user_id} is {f.cached}, "
                f"its entries sum to {f.entries}",
                user_ids=[f.user_id],
                credits=f.entries - f.cached,
                subjects=subject,
            )
        )
    if f.cached < 0:
        out.append(
            finding(
                FindingKind.NEGATIVE_BALANCE,
                Severity.WARNING,
                detail=f"balance of {f.user_id} is {f.cached}",
                user_ids=[f.user_id],
                credits=-f.cached,
                subjects=subject,
            )
        )
    return out


def tx_findings(f: TxFacts) -> list[Finding]:
    """A ledger transaction whose entries do not sum to zero, or with fewer than two."""
    if f.total == 0 and f.entries >= 2:
        return []
    return [
        finding(
            FindingKind.UNBALANCED_TRANSACTION,
            Severity.CRITICAL,
            detail=f"ledger transaction {f.ledger_tx}: {f.entries} entries summing to {f.total}",
            user_ids=f.user_ids,
            ledger_tx_ids=[f.ledger_tx],
            credits=-f.total,
            subjects=[f"ltx:{f.ledger_tx}"],
        )
    ]


def ledger_total_findings(total: int) -> list[Finding]:
    """The whole ledger sums to zero."""
    if total == 0:
        return []
    return [
        finding(
            FindingKind.LEDGER_NOT_ZERO_SUM,
            Severity.CRITICAL,
            detail=f"the ledger's entries sum to {total}, not 0",
            credits=-total,
            subjects=[],
        )
    ]


def payment_findings(f: PaymentFacts) -> list[Finding]:
    """Tokens that reached the treasury with no intent and no adjustment crediting them."""
    if f.tokens <= 0 or f.credited or f.adjusted:
        return []
    return [
        finding(
            FindingKind.UNMATCHED_PAYMENT,
            Severity.CRITICAL,
            detail=f"{f.signature}: {f.tokens} base units reached the treasury token account "
            f"({f.where}) and no intent or adjustment credits them",
            user_ids=f.user_ids,
            signatures=[f.signature],
            intent_ids=f.intent_ids,
            tokens=f.tokens,
            subjects=[f"sig:{f.signature}"],
        )
    ]


def chain_unchecked_finding(reason: str) -> Finding:
    """The chain side could not be read: zero drift cannot be shown."""
    return finding(
        FindingKind.CHAIN_UNCHECKED,
        Severity.WARNING,
        detail=f"the chain was not checked: {reason}"[:500],
        subjects=[],
    )


def _age(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def recheck_unmatched(previous: Finding, *, credited: bool, adjusted: bool) -> list[Finding]:
    """An open unmatched payment not seen on chain this run: still open (as it was) until an
    intent or an applied adjustment takes its signature."""
    if previous.kind != FindingKind.UNMATCHED_PAYMENT or credited or adjusted:
        return []
    return [previous]
