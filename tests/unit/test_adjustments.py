"""Pure adjustment rules: requests, references, reversals, who may decide, warnings."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.adjustments.rules import (
    Adjustment,
    AdjustmentKind,
    AdjustmentPolicy,
    AdjustmentStatus,
    Decision,
    DecisionKind,
    Refs,
    Resolution,
    ReversibleTx,
    decide,
    is_due,
    new_request,
    parse_refs,
    reversal_request,
    warnings,
)
from core.errors import Conflict, Forbidden, InvalidInput, PayopsError, Unprocessable
from core.ledger.postings import LedgerKind
from tests.support import signature

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = AdjustmentPolicy(
    managers=frozenset({"M1", "M2", "M3"}), two_approvals_above=1000, ttl=timedelta(hours=24)
)
APPROVE, REJECT = DecisionKind.APPROVE, DecisionKind.REJECT


def _adjustment(**changes: object) -> Adjustment:
    base = Adjustment(
        id=7,
        user_id="alice",
        credits=50,
        kind=AdjustmentKind.MISSING_CREDIT,
        refs=Refs(),
        reason="payment landed, credit missing",
        requester="OC1",
        requester_source="slack",
        status=AdjustmentStatus.PENDING_APPROVAL,
        approvals_required=1,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=24),
        decided_at=None,
        reverses_ledger_tx=None,
        applied_ledger_tx=None,
        slack_channel=None,
        slack_thread_ts=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _approved_by(*approvers: str) -> list[Decision]:
    return [Decision(7, a, APPROVE, None, NOW) for a in approvers]


LARGE = {"credits": 5000, "approvals_required": 2}

# (case, adjustment changes, decisions so far, approver, decision, now offset, error code)
REFUSED = [
    ("non-manager", {}, [], "OC2", APPROVE, timedelta(0), "not_a_manager"),
    ("non-manager rejecting", {}, [], "OC2", REJECT, timedelta(0), "not_a_manager"),
    (
        "requester is a manager",
        {"requester": "M1"},
        [],
        "M1",
        APPROVE,
        timedelta(0),
        "self_approval",
    ),
    (
        "second approval, same manager",
        LARGE,
        _approved_by("M1"),
        "M1",
        APPROVE,
        timedelta(0),
        "already_decided",
    ),
    (
        "reject after approving",
        LARGE,
        _approved_by("M1"),
        "M1",
        REJECT,
        timedelta(0),
        "already_decided",
    ),
    (
        "applied",
        {"status": AdjustmentStatus.APPLIED, "applied_ledger_tx": 3},
        [],
        "M2",
        APPROVE,
        timedelta(0),
        "adjustment_not_pending",
    ),
    (
        "rejected",
        {"status": AdjustmentStatus.REJECTED},
        [],
        "M2",
        APPROVE,
        timedelta(0),
        "adjustment_not_pending",
    ),
    (
        "expired status",
        {"status": AdjustmentStatus.EXPIRED},
        [],
        "M2",
        APPROVE,
        timedelta(0),
        "adjustment_not_pending",
    ),
    ("past expires_at", {}, [], "M2", APPROVE, timedelta(hours=24), "adjustment_expired"),
    ("past expires_at, reject", {}, [], "M2", REJECT, timedelta(days=3), "adjustment_expired"),
]


@pytest.mark.parametrize(
    ("changes", "so_far", "approver", "decision", "later", "code"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_decide_refuses(
    changes: dict[str, object],
    so_far: list[Decision],
    approver: str,
    decision: DecisionKind,
    later: timedelta,
    code: str,
) -> None:
    with pytest.raises(PayopsError) as caught:
        decide(_adjustment(**changes), so_far, approver, decision, POLICY, NOW + later)
    assert caught.value.code == code
    expected = Forbidden if code in ("not_a_manager", "self_approval") else Conflict
    assert isinstance(caught.value, expected)


# (case, adjustment changes, decisions so far, approver, decision, resolution, approvers)
DECIDED = [
    ("one approval applies a small one", {}, [], "M1", APPROVE, Resolution.APPLY, ("M1",)),
    (
        "negative small one",
        {"credits": -50, "kind": AdjustmentKind.OTHER},
        [],
        "M1",
        APPROVE,
        Resolution.APPLY,
        ("M1",),
    ),
    (
        "at the threshold one is enough",
        {"credits": 1000},
        [],
        "M1",
        APPROVE,
        Resolution.APPLY,
        ("M1",),
    ),
    ("above the threshold one waits", LARGE, [], "M1", APPROVE, Resolution.WAITING, ("M1",)),
    (
        "above the threshold, second manager applies",
        LARGE,
        _approved_by("M1"),
        "M2",
        APPROVE,
        Resolution.APPLY,
        ("M1", "M2"),
    ),
    (
        "negative above the threshold waits",
        {"credits": -5000, "kind": AdjustmentKind.OTHER, "approvals_required": 2},
        [],
        "M1",
        APPROVE,
        Resolution.WAITING,
        ("M1",),
    ),
    ("reject", {}, [], "M1", REJECT, Resolution.REJECT, ()),
    (
        "reject after one approval",
        LARGE,
        _approved_by("M1"),
        "M2",
        REJECT,
        Resolution.REJECT,
        ("M1",),
    ),
    (
        "approval by a former manager does not count",
        LARGE,
        _approved_by("EX"),
        "M1",
        APPROVE,
        Resolution.WAITING,
        ("M1",),
    ),
    (
        "policy raised since the request",
        {"credits": 5000, "approvals_required": 1},
        [],
        "M1",
        APPROVE,
        Resolution.WAITING,
        ("M1",),
    ),
    (
        "just before expiry",
        {"expires_at": NOW + timedelta(seconds=1)},
        [],
        "M1",
        APPROVE,
        Resolution.APPLY,
        ("M1",),
    ),
]


@pytest.mark.parametrize(
    ("changes", "so_far", "approver", "decision", "resolution", "approvers"),
    [case[1:] for case in DECIDED],
    ids=[case[0] for case in DECIDED],
)
def test_decide_resolves(
    changes: dict[str, object],
    so_far: list[Decision],
    approver: str,
    decision: DecisionKind,
    resolution: Resolution,
    approvers: tuple[str, ...],
) -> None:
    outcome = decide(_adjustment(**changes), so_far, approver, decision, POLICY, NOW, "ok")
    assert outcome.resolution is resolution
    assert outcome.approvers == approvers
    assert outcome.decision == Decision(7, approver, decision, "ok", NOW)


def test_policy_requires_two_approvals_only_above_the_threshold() -> None:
    assert [POLICY.approvals_for(c) for c in (1, 1000, 1001, -1000, -1001)] == [1, 1, 2, 1, 2]


def test_new_request_sets_approvals_expiry_and_kind() -> None:
    sig = signature()
    intent = str(uuid.uuid4())
    request = new_request(
        user_id=" alice ",
        credits=1500,
        reason="  verify failed, tx landed ",
        policy=POLICY,
        now=NOW,
        refs=[sig, intent, "PAY-42"],
    )
    assert request.user_id == "alice"
    assert request.reason == "verify failed, tx landed"
    assert request.kind is AdjustmentKind.MISSING_CREDIT
    assert request.refs == Refs((sig,), (intent,), "PAY-42")
    assert request.approvals_required == 2
    assert request.expires_at == NOW + timedelta(hours=24)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"credits": 0}, "invalid_credits"),
        ({"credits": POLICY.max_credits + 1}, "invalid_credits"),
        ({"credits": -POLICY.max_credits - 1}, "invalid_credits"),
        ({"credits": True}, "invalid_credits"),
        ({"reason": "   "}, "invalid_reason"),
        ({"reason": "x" * 501}, "invalid_reason"),
        ({"user_id": ""}, "invalid_user_id"),
        ({"kind": AdjustmentKind.MISSING_CREDIT, "credits": -5}, "invalid_credits"),
        ({"kind": AdjustmentKind.DUPLICATE_REVERSAL, "credits": 5}, "invalid_credits"),
        ({"refs": ["1" * 88]}, "invalid_signature"),
    ],
)
def test_new_request_refuses(changes: dict[str, object], code: str) -> None:
    args: dict[str, object] = {"user_id": "alice", "credits": 5, "reason": "because"}
    args.update(changes)
    with pytest.raises(InvalidInput) as caught:
        new_request(policy=POLICY, now=NOW, **args)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_negative_request_without_kind_is_other() -> None:
    request = new_request(user_id="a", credits=-3, reason="r", policy=POLICY, now=NOW)
    assert request.kind is AdjustmentKind.OTHER
    assert request.approvals_required == 1


def test_parse_refs_sorts_and_dedupes() -> None:
    sig = signature()
    intent = uuid.uuid4()
    refs = parse_refs([sig, f"{sig},", str(intent).upper(), "ticket:OPS-1", "", "ZD-9"])
    assert refs == Refs((sig,), (str(intent),), "OPS-1, ZD-9")
    assert parse_refs([]) == Refs()


def _original(**changes: object) -> ReversibleTx:
    base = ReversibleTx(
        id=11,
        kind=LedgerKind.PURCHASE,
        user_id="alice",
        user_amount=40,
        reversed_by=None,
        intent_id="5b1f0c9e-0000-4000-8000-000000000001",
        purchase_signature="sig-1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_reversal_takes_back_exactly_the_credit() -> None:
    request = reversal_request(_original(), reason="duplicate verify", policy=POLICY, now=NOW)
    assert request.credits == -40
    assert request.user_id == "alice"
    assert request.kind is AdjustmentKind.DUPLICATE_REVERSAL
    assert request.reverses_ledger_tx == 11
    assert request.refs == Refs(("sig-1",), ("5b1f0c9e-0000-4000-8000-000000000001",), None)


def test_reversal_of_an_adjustment_credit() -> None:
    original = _original(kind=LedgerKind.ADJUSTMENT, intent_id=None, purchase_signature=None)
    request = reversal_request(original, reason="granted twice", policy=POLICY, now=NOW)
    assert (request.credits, request.refs) == (-40, Refs())


@pytest.mark.parametrize(
    ("changes", "error", "code"),
    [
        ({"kind": LedgerKind.DEBIT, "user_amount": -5}, Unprocessable, "not_reversible"),
        ({"kind": LedgerKind.REVERSAL, "user_amount": -5}, Unprocessable, "not_reversible"),
        ({"kind": LedgerKind.ADJUSTMENT, "user_amount": -5}, Unprocessable, "not_reversible"),
        ({"reversed_by": 12}, Conflict, "already_reversed"),
    ],
)
def test_reversal_refuses(changes: dict[str, object], error: type[PayopsError], code: str) -> None:
    with pytest.raises(error) as caught:
        reversal_request(_original(**changes), reason="r", policy=POLICY, now=NOW)
    assert caught.value.code == code


def test_reversal_needs_a_reason() -> None:
    with pytest.raises(InvalidInput):
        reversal_request(_original(), reason=" ", policy=POLICY, now=NOW)


def test_ledger_kind_follows_the_reversal_link() -> None:
    assert _adjustment().ledger_kind is LedgerKind.ADJUSTMENT
    reversal = _adjustment(credits=-5, kind=AdjustmentKind.DUPLICATE_REVERSAL, reverses_ledger_tx=3)
    assert reversal.ledger_kind is LedgerKind.REVERSAL


def test_is_due_only_for_pending_past_expiry() -> None:
    adj = _adjustment()
    assert not is_due(adj, NOW)
    assert is_due(adj, adj.expires_at)
    assert not is_due(replace(adj, status=AdjustmentStatus.APPLIED), adj.expires_at)


@pytest.mark.parametrize(
    ("credits", "balance", "flagged"),
    [
        (-40, 100, False),
        (-40, 40, False),
        (-40, 39, True),
        (-40, 0, True),
        (50, 0, False),
        (50, -10, True),
        (-5, -10, True),
    ],
)
def test_warnings_flag_a_balance_below_zero(credits: int, balance: int, flagged: bool) -> None:
    found = warnings(_adjustment(credits=credits, kind=AdjustmentKind.OTHER), balance)
    assert bool(found) is flagged
    if flagged:
        assert "alice" in found[0]
        assert "negative" in found[0] or "below zero" in found[0]


def test_warnings_of_an_applied_adjustment_say_what_applying_did() -> None:
    spent = _adjustment(credits=-1000, kind=AdjustmentKind.OTHER)
    # The balance read after applying already holds the -1000.
    assert warnings(spent, -990, applied=True) == [
        "applying took alice's balance from 10 to -990 "
        "(below zero: the credits were probably spent already)"
    ]
    assert warnings(spent, 10) == [
        "applying takes alice's balance from 10 to -990 "
        "(below zero: the credits were probably spent already)"
    ]
