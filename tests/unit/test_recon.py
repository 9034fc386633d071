"""Reconciliation, the pure part: classification, fingerprints, settlement and drift."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.recon import (
    AttemptFacts,
    BalanceFacts,
    Finding,
    FindingKind,
    Flows,
    IntentFacts,
    PaymentFacts,
    ReconTotals,
    RunMode,
    Severity,
    SignatureFacts,
    TxFacts,
    Watermark,
    attempt_findings,
    balance_findings,
    carried_unchecked,
    chain_unchecked_finding,
    choose_mode,
    fingerprint,
    intent_findings,
    judge,
    ledger_total_findings,
    payment_findings,
    recheck_unmatched,
    settle,
    signature_findings,
    totals_of,
    tx_findings,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SLA = timedelta(hours=1)
SIG, SIG2 = "S" * 88, "T" * 88
INTENT = "6b0f3c52-7d0e-4d36-9a55-0d7f1b6f3c01"

CONFIRMED = IntentFacts(
    intent_id=INTENT,
    user_id="alice",
    status="CONFIRMED",
    credits=5,
    amount=50_000,
    received_amount=50_000,
    tx_signature=SIG,
    created_at=NOW - timedelta(minutes=10),
    purchase_tx=7,
    purchase_signature=SIG,
    credited_user="alice",
    credited=5,
    purchase_reversed=False,
    corrections=0,
    adjusted=False,
)
PENDING = replace(
    CONFIRMED,
    status="PENDING",
    tx_signature=None,
    received_amount=None,
    purchase_tx=None,
    purchase_signature=None,
    credited_user=None,
    credited=0,
)


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


# --- intents -----------------------------------------------------------------------------------

INTENT_CASES = [
    ("consistent confirmed intent", CONFIRMED, [], 0),
    ("recent pending intent", PENDING, [], 0),
    (
        "pending beyond the SLA",
        replace(PENDING, created_at=NOW - timedelta(hours=2)),
        ["stale_pending"],
        0,
    ),
    ("pending exactly at the SLA", replace(PENDING, created_at=NOW - SLA), [], 0),
    (
        "confirmed without its purchase credit",
        replace(CONFIRMED, purchase_tx=None, purchase_signature=None, credited=0),
        ["confirmed_without_credit"],
        5,
    ),
    (
        "missing credit settled by an applied correction",
        replace(CONFIRMED, purchase_tx=None, purchase_signature=None, credited=0, corrections=5),
        [],
        0,
    ),
    (
        "missing credit partly corrected",
        replace(CONFIRMED, purchase_tx=None, purchase_signature=None, credited=0, corrections=2),
        ["confirmed_without_credit"],
        3,
    ),
    (
        "confirmed whose purchase was reversed",
        replace(CONFIRMED, purchase_reversed=True, corrections=-5),
        ["confirmed_without_credit"],
        5,
    ),
    (
        "purchase reversed and credited again by a correction",
        replace(CONFIRMED, purchase_reversed=True, corrections=0),
        [],
        0,
    ),
    (
        "purchase credit for an expired intent",
        replace(PENDING, status="EXPIRED", purchase_tx=9, purchase_signature=SIG, credited=5),
        ["credit_without_confirmed_intent"],
        -5,
    ),
    (
        "purchase credit for a rejected intent, reversed",
        replace(
            PENDING,
            status="REJECTED",
            purchase_tx=9,
            purchase_signature=SIG,
            credited=5,
            purchase_reversed=True,
        ),
        [],
        0,
    ),
    (
        "purchase credited the wrong amount",
        replace(CONFIRMED, credited=7),
        ["purchase_mismatch"],
        -2,
    ),
    (
        "purchase credited another user",
        replace(CONFIRMED, credited_user="mallory"),
        ["purchase_mismatch"],
        0,
    ),
    (
        "purchase under another signature",
        replace(CONFIRMED, purchase_signature=SIG2),
        ["purchase_mismatch"],
        0,
    ),
    (
        "short purchase topped up by a correction",
        replace(CONFIRMED, credited=3, corrections=2),
        [],
        0,
    ),
    (
        "overpaid confirmed intent",
        replace(CONFIRMED, received_amount=60_000),
        ["overpayment"],
        0,
    ),
    (
        "overpayment settled by an adjustment naming it",
        replace(CONFIRMED, received_amount=60_000, adjusted=True),
        [],
        0,
    ),
]


@pytest.mark.parametrize(
    ("facts", "expected", "credits"),
    [pytest.param(f, e, c, id=name) for name, f, e, c in INTENT_CASES],
)
def test_intent_findings(facts: IntentFacts, expected: list[str], credits: int) -> None:
    found = intent_findings(facts, NOW, SLA)
    assert kinds(found) == expected
    assert sum(f.credits for f in found) == credits


def test_overpayment_counts_the_excess_tokens() -> None:
    [found] = intent_findings(replace(CONFIRMED, received_amount=60_001), NOW, SLA)
    assert (found.tokens, found.severity, found.signatures) == (10_001, "warning", (SIG,))


def test_intent_findings_name_the_user_intent_and_signature() -> None:
    facts = replace(CONFIRMED, purchase_tx=None, purchase_signature=None, credited=0)
    [found] = intent_findings(facts, NOW, SLA)
    assert (found.user_ids, found.intent_ids, found.signatures) == (("alice",), (INTENT,), (SIG,))
    assert found.severity == Severity.CRITICAL


# --- attempts ----------------------------------------------------------------------------------

REJECTED_THEN_OK = AttemptFacts(
    intent_id=INTENT,
    user_id="alice",
    intent_status="CONFIRMED",
    intent_signature=SIG,
    signature=SIG2,
    outcome="rejected",
    codes=("underpaid",),
    adjusted=False,
)

ATTEMPT_CASES = [
    ("underpaid, then paid in full", REJECTED_THEN_OK, [("failed_then_succeeded", "warning")]),
    (
        "wrong transaction pasted, then paid",
        replace(REJECTED_THEN_OK, codes=("wrong_recipient",)),
        [("failed_then_succeeded", "info")],
    ),
    (
        "someone else's payment pasted (credited to their intent), then paid",
        replace(REJECTED_THEN_OK, codes=("unbound_payment",), credited_elsewhere="other-intent"),
        [("failed_then_succeeded", "info")],
    ),
    (
        "failed verification settled by an adjustment naming its signature",
        replace(REJECTED_THEN_OK, adjusted=True),
        [],
    ),
    (
        "the confirming signature itself was rejected once",
        replace(REJECTED_THEN_OK, signature=SIG),
        [],
    ),
    (
        "rejected attempt on an intent still pending",
        replace(REJECTED_THEN_OK, intent_status="PENDING", intent_signature=None),
        [],
    ),
    (
        "paid after expiry and its grace",
        replace(
            REJECTED_THEN_OK,
            intent_status="REJECTED",
            intent_signature=None,
            codes=("paid_after_expiry",),
        ),
        [("late_payment", "warning")],
    ),
    (
        "late payment corrected by an adjustment",
        replace(
            REJECTED_THEN_OK,
            intent_status="REJECTED",
            intent_signature=None,
            codes=("paid_after_expiry",),
            adjusted=True,
        ),
        [],
    ),
    (
        "credited within the grace period",
        replace(REJECTED_THEN_OK, outcome="confirmed", signature=SIG, codes=("late",)),
        [("late_payment", "info")],
    ),
    (
        "credited overpaid and late",
        replace(REJECTED_THEN_OK, outcome="confirmed", signature=SIG, codes=("overpaid,late",)),
        [("late_payment", "info")],
    ),
    (
        "credited overpaid, on time",
        replace(REJECTED_THEN_OK, outcome="confirmed", signature=SIG, codes=("overpaid",)),
        [],
    ),
]


@pytest.mark.parametrize(
    ("facts", "expected"), [pytest.param(f, e, id=name) for name, f, e in ATTEMPT_CASES]
)
def test_attempt_findings(facts: AttemptFacts, expected: list[tuple[str, str]]) -> None:
    assert [(f.kind, f.severity) for f in attempt_findings(facts)] == expected


def test_failed_then_succeeded_is_one_finding_per_rejected_signature() -> None:
    one = attempt_findings(REJECTED_THEN_OK)[0]
    other = attempt_findings(replace(REJECTED_THEN_OK, signature="U" * 88))[0]
    assert one.fingerprint != other.fingerprint
    assert one.signatures == (SIG2,)


# --- signatures, balances, ledger transactions -------------------------------------------------

SIGNATURE_CASES = [
    ("one purchase", SignatureFacts(SIG, (INTENT,), ("alice",), 5, 5, 1), 0),
    (
        "purchase and a missing-credit adjustment",
        SignatureFacts(SIG, (INTENT,), ("alice",), 5, 10, 2),
        -5,
    ),
    ("duplicate reversed", SignatureFacts(SIG, (INTENT,), ("alice",), 5, 5, 2), 0),
    ("two intents credited", SignatureFacts(SIG, (INTENT, "i2"), ("alice", "bob"), 7, 12, 2), -5),
    ("two adjustments, no intent", SignatureFacts(SIG, (), (), 4, 8, 2), -4),
]


@pytest.mark.parametrize(
    ("facts", "credits"), [pytest.param(f, c, id=name) for name, f, c in SIGNATURE_CASES]
)
def test_signature_findings(facts: SignatureFacts, credits: int) -> None:
    found = signature_findings(facts)
    assert kinds(found) == (["duplicate_signature"] if credits else [])
    assert sum(f.credits for f in found) == credits


@pytest.mark.parametrize(
    ("cached", "entries", "expected"),
    [
        (5, 5, []),
        (0, 0, []),
        (7, 5, ["balance_mismatch"]),
        (-3, -3, ["negative_balance"]),
        (-3, 2, ["balance_mismatch", "negative_balance"]),
        (2, -3, ["balance_mismatch"]),
    ],
)
def test_balance_findings(cached: int, entries: int, expected: list[str]) -> None:
    assert kinds(balance_findings(BalanceFacts("alice", cached, entries))) == expected


@pytest.mark.parametrize(
    ("total", "entries", "found"), [(0, 2, False), (0, 3, False), (5, 2, True), (0, 1, True)]
)
def test_tx_findings(total: int, entries: int, found: bool) -> None:
    assert bool(tx_findings(TxFacts(42, total, entries, ("alice",)))) is found


def test_ledger_total_finding_only_when_not_zero() -> None:
    assert ledger_total_findings(0) == []
    assert kinds(ledger_total_findings(3)) == ["ledger_not_zero_sum"]


# --- payments ----------------------------------------------------------------------------------

PAYMENT = PaymentFacts(SIG, 1000, (), (), credited=False, adjusted=False, where="treasury")


@pytest.mark.parametrize(
    ("facts", "found"),
    [
        (PAYMENT, True),
        (replace(PAYMENT, credited=True), False),
        (replace(PAYMENT, adjusted=True), False),
        (replace(PAYMENT, tokens=0), False),
        (replace(PAYMENT, tokens=-5), False),
    ],
)
def test_payment_findings(facts: PaymentFacts, found: bool) -> None:
    result = payment_findings(facts)
    assert bool(result) is found
    if found:
        assert (result[0].kind, result[0].tokens) == ("unmatched_payment", 1000)


def test_stored_unmatched_payment_stays_open_until_credited_or_adjusted() -> None:
    [stored] = payment_findings(PAYMENT)
    assert recheck_unmatched(stored, credited=False, adjusted=False) == [stored]
    assert recheck_unmatched(stored, credited=True, adjusted=False) == []
    assert recheck_unmatched(stored, credited=False, adjusted=True) == []


# --- fingerprints ------------------------------------------------------------------------------


def test_fingerprint_ignores_subject_order_and_duplicates() -> None:
    assert fingerprint("k", ["b", "a", "a"]) == fingerprint("k", ["a", "b"])
    assert fingerprint("k", ["a"]) != fingerprint("other", ["a"])
    assert len(fingerprint("k", [])) == 64


def test_fingerprint_is_stable_when_amounts_and_details_move() -> None:
    facts = replace(CONFIRMED, purchase_tx=None, purchase_signature=None, credited=0)
    first = intent_findings(facts, NOW, SLA)[0]
    later = intent_findings(replace(facts, corrections=2), NOW + timedelta(days=1), SLA)[0]
    assert first.fingerprint == later.fingerprint
    assert first.credits != later.credits


def test_fingerprints_differ_by_kind_for_one_subject() -> None:
    stale = intent_findings(replace(PENDING, created_at=NOW - timedelta(days=1)), NOW, SLA)[0]
    missing = intent_findings(
        replace(CONFIRMED, purchase_tx=None, purchase_signature=None, credited=0), NOW, SLA
    )[0]
    assert stale.fingerprint != missing.fingerprint


def test_fingerprint_is_sha256_of_kind_and_sorted_subjects() -> None:
    # a change here changes every stored fingerprint: alerts would post everything again
    text = f"stale_pending|intent:{INTENT}|user:alice"
    assert fingerprint("stale_pending", ["user:alice", f"intent:{INTENT}"]) == (
        hashlib.sha256(text.encode()).hexdigest()
    )
    assert fingerprint("stale_pending", [f"intent:{INTENT}"]) == (
        "288552e41ffc39c25fbffff2d789d237360f4ed55cb6ce6cb326f530c2f384cc"
    )


# --- settlement and drift ----------------------------------------------------------------------


def F(
    kind: FindingKind, subject: str, severity: Severity = Severity.CRITICAL, **kw: int
) -> Finding:
    return Finding(
        fingerprint=fingerprint(kind.value, [subject]),
        kind=kind,
        severity=severity,
        user_ids=(),
        signatures=(),
        intent_ids=(),
        credits=kw.get("credits", 0),
        tokens=kw.get("tokens", 0),
        detail=subject,
    )


A = F(FindingKind.STALE_PENDING, "a", Severity.WARNING)
B = F(FindingKind.BALANCE_MISMATCH, "b")
C = F(FindingKind.UNMATCHED_PAYMENT, "c", tokens=10)
U = chain_unchecked_finding("node down")
Z = F(FindingKind.LEDGER_NOT_ZERO_SUM, "z")


def test_settle_new_still_open_and_resolved() -> None:
    s = settle([A, B], [B, C], carried_unchecked(RunMode.FULL, chain_attempted=False))
    assert s.new == [C]
    assert s.resolved == [A]
    assert s.open == [B, C]  # critical first
    assert s.carried == []


def test_settle_same_fingerprint_twice_is_one_finding() -> None:
    s = settle([], [A, replace(A, detail="again")], carried_unchecked(RunMode.FULL, False))
    assert s.open == [A]


@pytest.mark.parametrize(
    ("mode", "attempted", "carried"),
    [
        (RunMode.FULL, False, [U]),
        (RunMode.FULL, True, []),
        (RunMode.INCREMENTAL, False, [U]),
        (RunMode.WINDOW, False, [U, Z]),
        (RunMode.WINDOW, True, [Z]),
    ],
)
def test_what_a_run_cannot_check_stays_open(
    mode: RunMode, attempted: bool, carried: list[Finding]
) -> None:
    s = settle([U, Z, A], [], carried_unchecked(mode, attempted))
    assert {f.fingerprint for f in s.carried} == {f.fingerprint for f in carried}
    assert A in s.resolved


@pytest.mark.parametrize(
    ("full", "window", "has_watermark", "mode"),
    [
        (False, None, False, RunMode.FULL),
        (False, None, True, RunMode.INCREMENTAL),
        (True, None, True, RunMode.FULL),
        (False, NOW, True, RunMode.WINDOW),
        (True, NOW, False, RunMode.WINDOW),
    ],
)
def test_choose_mode(
    full: bool, window: datetime | None, has_watermark: bool, mode: RunMode
) -> None:
    assert choose_mode(full=full, window_start=window, has_watermark=has_watermark) is mode


def totals(expected: int, applied: int, corrections: int = 0) -> ReconTotals:
    return totals_of(
        Flows(expected_credits=expected, purchase_credits=applied),
        correction_credits=corrections,
        corrections=1 if corrections else 0,
        findings=[],
    )


@pytest.mark.parametrize(
    ("t", "open_", "drift"),
    [
        (totals(10, 10), [], (0, 0, True)),
        (totals(10, 5), [], (5, 0, False)),
        (totals(10, 5, corrections=5), [], (0, 0, True)),
        (totals(10, 10), [A], (0, 0, False)),
        (totals(10, 10), [C], (0, 10, False)),
        (totals(10, 10), [replace(A, severity="info")], (0, 0, True)),
        (totals(10, 15, corrections=-5), [], (0, 0, True)),
        # a second credit for one payment is neither purchase nor correction: its finding
        # carries the excess into the drift
        (totals(10, 10), [F(FindingKind.DUPLICATE_SIGNATURE, "d", credits=-4)], (-4, 0, False)),
    ],
)
def test_judge(t: ReconTotals, open_: list[Finding], drift: tuple[int, int, bool]) -> None:
    d = judge(t, open_)
    assert (d.credits, d.tokens, d.zero) == drift


def test_flows_add_up_for_incremental_runs() -> None:
    base = Flows(1, 5, 50, 50, 1, 5, 1, 0)
    delta = Flows(2, 7, 70, 71, 2, 7, 3, 0)
    assert base + delta == Flows(3, 12, 120, 121, 3, 12, 4, 0)


def test_totals_round_trip_through_json() -> None:
    t = totals_of(
        Flows(3, 12, 1, 2, 3, 12, 4, 0), correction_credits=-1, corrections=2, findings=[A, B, B]
    )
    back = ReconTotals.from_json(t.to_json())
    assert back == t
    assert (back.applied_credits, back.stale_pending, back.balance_mismatches) == (11, 1, 2)
    assert back.flows == Flows(3, 12, 1, 2, 3, 12, 4, 0)


def test_watermark_round_trip() -> None:
    w = Watermark(NOW, "10:12:11", NOW + timedelta(seconds=1))
    assert Watermark.from_json(w.to_json()) == w
