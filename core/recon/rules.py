"""Reconciliation, the pure part: what the facts read from the database and the chain mean.

The SQL (`core.recon.scope`, `core.recon.checks`) reads facts per intent, signature, user
and ledger transaction; the functions here turn each into findings (`core.recon.findings`),
each with a fingerprint that is the same for the same anomaly run after run.
`settle` compares a run's findings with those open before it (new, still open, resolved),
and `judge` gives the drift. Everything takes `now` where time matters; nothing does I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

from core.recon.facts import (
    AttemptFacts,
    BalanceFacts,
    IntentFacts,
    PaymentFacts,
    SignatureFacts,
    TxFacts,
)
from core.recon.findings import (
    MONEY_AT_TREASURY_CODES,
    Finding,
    FindingKind,
    Severity,
    finding,
)

# --- classification ---------------------------------------------------------------------------


def intent_findings(f: IntentFacts, now: datetime, pending_sla: timedelta) -> list[Finding]:
    """Purchase credit vs intent, overpayment and stale PENDING, for one intent."""
    out: list[Finding] = []
    if f.status == "CONFIRMED":
        out += _credit_of_confirmed(f)
        out += _overpaid(f)
    elif f.purchase_tx is not None and not f.purchase_reversed:
        out += _credit_without_confirmed(f, f.purchase_tx)
    if f.status == "PENDING" and now - f.created_at > pending_sla:
        out += _stale(f, pending_sla)
    return out


def _credit_of_confirmed(f: IntentFacts) -> list[Finding]:
    """A CONFIRMED intent's purchase credit: missing, reversed or not its own."""
    net = f.credited + f.corrections
    users, intents, subject = [f.user_id], [f.intent_id], [f"intent:{f.intent_id}"]
    out: list[Finding] = []
    if f.purchase_tx is None or f.purchase_reversed:
        if net < f.credits:
            why = "has no purchase credit" if f.purchase_tx is None else "had its credit reversed"
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
    return out


def _overpaid(f: IntentFacts) -> list[Finding]:
    """A CONFIRMED intent that received more than its price, the rest uncredited."""
    received = f.received_amount or 0
    if received <= f.amount or f.adjusted:
        return []
    return [
        finding(
            FindingKind.OVERPAYMENT,
            Severity.WARNING,
            detail=f"intent {f.intent_id} received {received} base units for "
            f"{f.amount}: {received - f.amount} over, uncredited",
            signatures=[f.tx_signature],
            tokens=received - f.amount,
            **_about(f),
        )
    ]


def _credit_without_confirmed(f: IntentFacts, purchase_tx: int) -> list[Finding]:
    """A purchase credit (`purchase_tx`) whose intent is not CONFIRMED."""
    return [
        finding(
            FindingKind.CREDIT_WITHOUT_CONFIRMED_INTENT,
            Severity.CRITICAL,
            detail=f"purchase credit {purchase_tx} of {f.credited} credits for intent "
            f"{f.intent_id}, which is {f.status}",
            signatures=[f.purchase_signature],
            ledger_tx_ids=[purchase_tx],
            credits=-f.credited,
            **_about(f),
        )
    ]


def _stale(f: IntentFacts, pending_sla: timedelta) -> list[Finding]:
    """A PENDING intent past the SLA."""
    return [
        finding(
            FindingKind.STALE_PENDING,
            Severity.WARNING,
            # no age in the text: the same finding reads the same run after run
            detail=f"intent {f.intent_id} PENDING since {f.created_at:%Y-%m-%d %H:%M} UTC "
            f"(SLA {_age(pending_sla)}), {f.credits} credits / {f.amount} base units",
            **_about(f),
        )
    ]


class _About(TypedDict):
    user_ids: list[str | None]
    intent_ids: list[str | None]
    subjects: list[str]


def _about(f: IntentFacts) -> _About:
    """Whom and what an intent's finding names."""
    return {
        "user_ids": [f.user_id],
        "intent_ids": [f.intent_id],
        "subjects": [f"intent:{f.intent_id}"],
    }


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
