"""The books tied to the chain, pure: the watcher's recorded flows against the ledger, and its
books against the treasury's balance on chain."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.recon import (
    BalanceTie,
    FindingKind,
    FlowFacts,
    Severity,
    balance_tie_findings,
    fingerprint,
    flow_findings,
)
from core.recon.totals import ReconTotals, RunMode, carried_unchecked, judge

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SLA = timedelta(hours=1)
GRACE = timedelta(minutes=10)
SIG = "5" * 88
OTHER = "4" * 88

INFLOW = FlowFacts(
    signature=SIG,
    slot=10,
    amount=3_000,
    payer="Payer1",
    intent_id="11111111-1111-1111-1111-111111111111",
    user_id="ada",
    intent_status="CONFIRMED",
    intent_signature=SIG,
    intent_created_at=NOW - timedelta(minutes=5),
    intent_expires_at=NOW + timedelta(minutes=10),
    credited=True,
    adjusted=False,
    explained=False,
)
PENDING = replace(INFLOW, intent_status="PENDING", intent_signature=None, credited=False)
UNBOUND = replace(
    INFLOW,
    intent_id=None,
    user_id=None,
    intent_status=None,
    intent_signature=None,
    intent_created_at=None,
    intent_expires_at=None,
    credited=False,
)
OUTFLOW = replace(UNBOUND, amount=-500)
# created 2h ago, expired 1h50m ago: the deadline (SLA 1h after creation, expiry + grace)
# passed an hour and forty minutes ago
OLD_PENDING = replace(
    PENDING,
    intent_created_at=NOW - timedelta(hours=2),
    intent_expires_at=NOW - timedelta(hours=1, minutes=50),
)


def kinds(facts: FlowFacts) -> list[str]:
    return [f.kind.value for f in flow_findings(facts, now=NOW, pending_sla=SLA, grace=GRACE)]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # a bound inflow that confirmed its intent is what the ledger credited
        (INFLOW, []),
        # one part of an underpaid total, or not verified yet: the intent is still open
        (PENDING, []),
        # ... until its deadline passed
        (OLD_PENDING, ["uncredited_inflow"]),
        # expiry + grace later than the SLA: still open within the grace
        (
            replace(
                PENDING,
                intent_created_at=NOW - timedelta(hours=2),
                intent_expires_at=NOW - timedelta(minutes=5),
            ),
            [],
        ),
        # confirmed by another payment: this one credited nothing
        (replace(INFLOW, intent_signature=OTHER), ["uncredited_inflow"]),
        (replace(PENDING, intent_status="REJECTED"), ["uncredited_inflow"]),
        (replace(PENDING, intent_status="EXPIRED"), ["uncredited_inflow"]),
        # an applied adjustment or a closed incident naming the signature settles it
        (replace(OLD_PENDING, adjusted=True), []),
        (replace(OLD_PENDING, explained=True), []),
        # tokens with no intent
        (UNBOUND, ["unmatched_payment"]),
        (replace(UNBOUND, credited=True), []),
        (replace(UNBOUND, adjusted=True), []),
        (replace(UNBOUND, explained=True), []),
        # tokens that left the treasury, until an incident explains them
        (OUTFLOW, ["treasury_outflow"]),
        (replace(OUTFLOW, adjusted=True), ["treasury_outflow"]),
        (replace(OUTFLOW, explained=True), []),
    ],
)
def test_flow_findings(facts: FlowFacts, expected: list[str]) -> None:
    assert kinds(facts) == expected


def test_an_uncredited_inflow_names_its_signature_intent_user_and_tokens() -> None:
    [f] = flow_findings(
        replace(INFLOW, intent_signature=OTHER), now=NOW, pending_sla=SLA, grace=GRACE
    )
    assert (f.kind, f.severity) == (FindingKind.UNCREDITED_INFLOW, Severity.CRITICAL)
    assert (f.signatures, f.intent_ids, f.user_ids) == ((SIG,), (INFLOW.intent_id,), ("ada",))
    assert f.tokens == 3_000
    assert f"CONFIRMED by {OTHER}" in f.detail
    assert f.fingerprint == fingerprint("uncredited_inflow", [f"sig:{SIG}"])


def test_an_outflow_is_a_warning_with_the_tokens_that_left() -> None:
    [f] = flow_findings(OUTFLOW, now=NOW, pending_sla=SLA, grace=GRACE)
    assert (f.severity, f.tokens, f.signatures) == (Severity.WARNING, -500, (SIG,))
    assert "500 base units left the treasury" in f.detail


def test_an_unbound_inflow_keeps_the_unmatched_payment_fingerprint() -> None:
    # the same payment seen by the windowed look before the watcher ran stays one finding
    [f] = flow_findings(UNBOUND, now=NOW, pending_sla=SLA, grace=GRACE)
    assert f.fingerprint == fingerprint("unmatched_payment", [f"sig:{SIG}"])
    assert (f.severity, f.tokens) == (Severity.CRITICAL, 3_000)


def test_a_flow_finding_reads_the_same_run_after_run() -> None:
    first = flow_findings(OLD_PENDING, now=NOW, pending_sla=SLA, grace=GRACE)
    later = flow_findings(OLD_PENDING, now=NOW + timedelta(days=1), pending_sla=SLA, grace=GRACE)
    assert first == later


TIE = BalanceTie(
    account="Treasury1",
    start_balance=1_000,
    recorded=2_500,
    cursor_signature=SIG,
    cursor_slot=40,
    on_chain=3_500,
    slot=41,
)


@pytest.mark.parametrize(
    ("tie", "tokens"),
    [
        (TIE, None),  # tied: start + flows = balance
        (replace(TIE, on_chain=4_000), 500),  # tokens arrived without a transaction seen
        (replace(TIE, on_chain=3_000), -500),  # tokens gone without one
        # not compared (the watcher is behind): never drift, whatever the numbers
        (replace(TIE, on_chain=9_999, unchecked="watcher behind: x not recorded yet"), None),
        (replace(TIE, on_chain=None, slot=None), None),
    ],
)
def test_balance_tie(tie: BalanceTie, tokens: int | None) -> None:
    found = balance_tie_findings(tie)
    if tokens is None:
        assert found == []
        return
    [f] = found
    assert (f.kind, f.severity, f.tokens) == (
        FindingKind.TREASURY_BALANCE_DRIFT,
        Severity.CRITICAL,
        tokens,
    )
    assert f.signatures == (SIG,)
    assert "3500" in f.detail
    # the fingerprint is the account's: one finding while the books and the chain disagree
    assert f.fingerprint == fingerprint("treasury_balance_drift", ["account:Treasury1"])


def test_a_balance_drift_reads_the_same_at_another_slot() -> None:
    a = balance_tie_findings(replace(TIE, on_chain=4_000))
    b = balance_tie_findings(replace(TIE, on_chain=4_000, slot=99))
    assert a == b


def test_uncredited_inflows_and_balance_drift_count_in_the_token_drift() -> None:
    inflow = flow_findings(OLD_PENDING, now=NOW, pending_sla=SLA, grace=GRACE)
    outflow = flow_findings(OUTFLOW, now=NOW, pending_sla=SLA, grace=GRACE)
    drift = balance_tie_findings(replace(TIE, on_chain=3_600))
    totals = ReconTotals(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    judged = judge(totals, [*inflow, *outflow, *drift])
    assert judged.tokens == 3_000 + 100  # an outflow is recorded in the books: not drift
    assert not judged.zero
    assert not judge(totals, outflow).zero  # but it needs a person


def test_a_balance_drift_stays_open_while_the_balance_is_not_compared() -> None:
    [f] = balance_tie_findings(replace(TIE, on_chain=4_000))
    assert carried_unchecked(RunMode.FULL, True, balance_compared=False)(f)
    assert not carried_unchecked(RunMode.FULL, True, balance_compared=True)(f)
