"""The triage rules, pure: subjects, windows, the runbook's diagnoses, the window summary."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.signature import Signature

from core.chain.rpc import RpcUnavailable
from core.errors import InvalidInput
from core.ledger import LedgerKind
from core.purchases import IntentStatus
from core.triage import (
    AttemptFacts,
    AttemptSummaryRow,
    BalanceFacts,
    ChainFacts,
    ChainStatus,
    DiagnosisKind,
    Evidence,
    FailingUsers,
    IntentFacts,
    LedgerFacts,
    Scope,
    Subject,
    SubjectKind,
    Window,
    chain_facts,
    classify_subject,
    diagnose,
    parse_window,
    summarise,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SLA = timedelta(hours=1)
I1, I2 = uuid.UUID(int=1), uuid.UUID(int=2)
S1, S2 = str(Signature(bytes([1]) * 64)), str(Signature(bytes([2]) * 64))
WALLET = str(Keypair().pubkey())
ALICE = Subject(SubjectKind.USER, "alice")
_ids = itertools.count(1)

Fact = IntentFacts | AttemptFacts | LedgerFacts | BalanceFacts | ChainFacts


def intent(
    id: uuid.UUID = I1,
    status: IntentStatus = IntentStatus.PENDING,
    *,
    sig: str | None = None,
    user: str = "alice",
    credits: int = 5,
    age: timedelta = timedelta(minutes=10),
) -> IntentFacts:
    created = NOW - age
    confirmed = status is IntentStatus.CONFIRMED
    return IntentFacts(
        id, user, credits, credits * 10_000, WALLET, status, sig, None,
        created, created + timedelta(minutes=15), created if confirmed else None,
    )  # fmt: skip


def attempt(
    outcome: str,
    *,
    intent: uuid.UUID = I1,
    sig: str = S1,
    code: str | None = None,
    rid: str | None = None,
    ago: timedelta = timedelta(minutes=5),
    user: str = "alice",
) -> AttemptFacts:
    n = next(_ids)
    return AttemptFacts(n, intent, user, sig, rid, "api", outcome, code, f"detail {n}", NOW - ago)


def purchase(
    tx: int, *, intent: uuid.UUID = I1, sig: str = S1, user: str = "alice", credits: int = 5
) -> LedgerFacts:
    return LedgerFacts(tx, LedgerKind.PURCHASE, user, credits, intent, sig, None, NOW)


def ledger(tx: int, kind: LedgerKind, credits: int, *, reverses: int | None = None) -> LedgerFacts:
    return LedgerFacts(tx, kind, "alice", credits, None, None, reverses, NOW)


def chain(sig: str = S1, level: str = "finalized", err: str | None = None) -> ChainFacts:
    return ChainFacts(sig, ChainStatus.FOUND, level, err, 42)


def evidence(*facts: Fact, subject: Subject = ALICE, truncated: bool = False) -> Evidence:
    def of(kind: type[Any]) -> tuple[Any, ...]:
        return tuple(f for f in facts if isinstance(f, kind))

    return Evidence(
        subject, of(IntentFacts), of(AttemptFacts), of(LedgerFacts), of(BalanceFacts),
        of(ChainFacts), truncated,
    )  # fmt: skip


def kinds(ev: Evidence) -> list[DiagnosisKind]:
    return [d.kind for d in diagnose(ev, NOW, SLA)]


CREDITED = (
    intent(status=IntentStatus.CONFIRMED, sig=S1),
    attempt("confirmed", rid="req-ok"),
    purchase(1),
    BalanceFacts("alice", 5, 5),
)

# --- subjects ---------------------------------------------------------------------------

SUBJECTS = [
    (str(I1), SubjectKind.INTENT, str(I1)),
    (str(I2).upper(), SubjectKind.INTENT, str(I2)),
    (f"  {S1}  ", SubjectKind.SIGNATURE, S1),
    (WALLET, SubjectKind.WALLET, WALLET),
    ("alice", SubjectKind.USER, "alice"),
    ("google-oauth2|1234", SubjectKind.USER, "google-oauth2|1234"),
    ("auth0:abc", SubjectKind.USER, "auth0:abc"),  # not one of our prefixes
    ("é" * 70, SubjectKind.USER, "é" * 70),
    (f"user:{WALLET}", SubjectKind.USER, WALLET),
    (f"USER: {I1}", SubjectKind.USER, str(I1)),
    (f"wallet:{WALLET}", SubjectKind.WALLET, WALLET),
    (f"tx:{S2}", SubjectKind.SIGNATURE, S2),
    (f"intent:{I1}", SubjectKind.INTENT, str(I1)),
]


@pytest.mark.parametrize(("text", "kind", "value"), SUBJECTS)
def test_classify_subject_reads_each_kind(text: str, kind: SubjectKind, value: str) -> None:
    subject = classify_subject(text)
    assert (subject.kind, subject.value) == (kind, value)
    assert subject.explicit == (":" in text and not text.startswith("auth0"))


@pytest.mark.parametrize(
    "text", ["", "   ", "two words", "x" * 201, "wallet:alice", "tx:abc", "intent:42", "user:"]
)
def test_classify_subject_refuses_unreadable_input(text: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_subject(text)
    assert exc.value.code == "invalid_subject"


# --- windows ----------------------------------------------------------------------------

H = timedelta(hours=1)
WINDOWS = [
    ("", NOW - H, NOW),
    ("last 2h", NOW - 2 * H, NOW),
    ("2h", NOW - 2 * H, NOW),
    ("last 30m", NOW - timedelta(minutes=30), NOW),
    ("LAST 90 minutes", NOW - timedelta(minutes=90), NOW),
    ("last 1d", NOW - 24 * H, NOW),
    ("30 days", NOW - timedelta(days=30), NOW),
    (
        "2026-11-26T10:00Z..2026-11-26T12:00Z",
        datetime(2026, 11, 26, 10, tzinfo=UTC),
        datetime(2026, 11, 26, 12, tzinfo=UTC),
    ),
    (  # no zone: UTC; another zone is converted
        "2026-11-26T10:00..2026-11-26T13:00+02:00",
        datetime(2026, 11, 26, 10, tzinfo=UTC),
        datetime(2026, 11, 26, 11, tzinfo=UTC),
    ),
    ("2026-11-26T09:30Z..", datetime(2026, 11, 26, 9, 30, tzinfo=UTC), NOW),
    ("2026-11-25..now", datetime(2026, 11, 25, tzinfo=UTC), NOW),
]


@pytest.mark.parametrize(("text", "start", "end"), WINDOWS)
def test_parse_window_reads_relative_and_explicit_windows(
    text: str, start: datetime, end: datetime
) -> None:
    assert parse_window(text, NOW) == Window(start, end)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "last 0h",
        "last 31d",
        "last 999999d",
        "last 2w",
        "2026-11-26T12:00Z..2026-11-26T10:00Z",
        "2026-10-01T00:00Z..2026-11-26T00:00Z",
        "x..y",
        "..2026-11-26T10:00Z",
    ],
)
def test_parse_window_refuses_bad_or_too_long_windows(text: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_window(text, NOW)
    assert exc.value.code == "invalid_window"


# --- diagnoses --------------------------------------------------------------------------

DUPLICATES = {
    "two purchases of one signature": (
        intent(status=IntentStatus.CONFIRMED, sig=S1),
        intent(I2, status=IntentStatus.CONFIRMED, sig=S1),
        attempt("confirmed", rid="req-a"),
        attempt("confirmed", intent=I2, rid="req-b"),
        purchase(1),
        purchase(2, intent=I2),
    ),
    "two purchases of one intent": (
        intent(status=IntentStatus.CONFIRMED, sig=S1),
        attempt("confirmed", rid="req-a"),
        attempt("confirmed", sig=S2, rid="req-b"),
        purchase(1),
        purchase(2, sig=S2),
    ),
    "credit for a signature the intent is not confirmed by": (
        intent(status=IntentStatus.CONFIRMED, sig=S2),
        attempt("confirmed", rid="req-a"),
        purchase(1),
    ),
    "credit for an intent still pending": (intent(), purchase(1)),
    "cached balance above the entries": (*CREDITED[:3], BalanceFacts("alice", 12, 5)),
}
DUPLICATE_REQUESTS = [["req-a", "req-b"], ["req-a", "req-b"], ["req-a"], [], []]


@pytest.mark.parametrize(
    ("facts", "request_ids"),
    list(zip(DUPLICATES.values(), DUPLICATE_REQUESTS, strict=True)),
    ids=list(DUPLICATES),
)
def test_diagnose_duplicate_credit(facts: tuple[Fact, ...], request_ids: list[str]) -> None:
    [first, *_] = diagnose(evidence(*facts), NOW, SLA)
    assert first.kind is DiagnosisKind.DUPLICATE_CREDIT
    assert "excess credits" in first.summary
    assert first.request_ids == request_ids


def test_diagnose_duplicate_credit_counts_the_excess_and_names_both_requests() -> None:
    [first] = diagnose(evidence(*DUPLICATES["two purchases of one signature"]), NOW, SLA)
    assert "5 excess credits for alice" in first.summary
    assert first.request_ids == ["req-a", "req-b"]
    assert f"signature {S1} credited 2 times: #1 +5" in first.evidence_lines[0]


def test_diagnose_duplicate_credit_reports_a_duplicated_intent_once() -> None:
    [first] = diagnose(evidence(*DUPLICATES["two purchases of one intent"]), NOW, SLA)
    assert len(first.evidence_lines) == 1
    assert "5 excess credits" in first.summary


def test_diagnose_duplicate_credit_is_gone_once_the_excess_is_reversed() -> None:
    facts = (
        *DUPLICATES["two purchases of one intent"],
        ledger(3, LedgerKind.REVERSAL, -5, reverses=2),
    )
    assert kinds(evidence(*facts)) == [DiagnosisKind.HEALTHY]


WRITE_FAILURES = {  # facts, request ids of the attempts involved
    "confirmed intent without a purchase": (
        (intent(status=IntentStatus.CONFIRMED, sig=S1), attempt("duplicate", rid="req-d")),
        ["req-d"],
    ),
    "confirmed attempt without a purchase": (
        (intent(), attempt("confirmed", rid="req-w")),
        ["req-w"],
    ),
    "cached balance below the entries": ((*CREDITED[:3], BalanceFacts("alice", 0, 5)), []),
    "finalized transaction never credited": (
        (intent(), attempt("pending", code="tx_not_final", rid="req-w"), chain(S1, "finalized")),
        ["req-w"],
    ),
    "credit write failed, chain not asked": (
        (intent(), attempt("credit_failed", code="ledger_write_failed", rid="req-f")),
        ["req-f"],
    ),
}


@pytest.mark.parametrize(
    ("facts", "request_ids"), WRITE_FAILURES.values(), ids=list(WRITE_FAILURES)
)
def test_diagnose_ledger_write_failed(facts: tuple[Fact, ...], request_ids: list[str]) -> None:
    [first, *_] = diagnose(evidence(*facts), NOW, SLA)
    assert first.kind is DiagnosisKind.LEDGER_WRITE_FAILED
    assert "credits missing for alice" in first.summary
    assert first.request_ids == request_ids


def test_a_failed_credit_names_its_error_in_the_evidence() -> None:
    facts, _ = WRITE_FAILURES["credit write failed, chain not asked"]
    [first] = diagnose(evidence(*facts), NOW, SLA)
    [line] = first.evidence_lines
    assert "passed the verification rules" in line
    assert "credit_failed ledger_write_failed: detail" in line
    assert line.endswith("the credit write failed")


def test_a_failed_credit_then_a_credit_is_healthy() -> None:
    facts = (
        intent(status=IntentStatus.CONFIRMED, sig=S1),
        attempt("credit_failed", code="ledger_write_failed", ago=timedelta(minutes=6)),
        attempt("confirmed", rid="req-ok"),
        purchase(1),
        BalanceFacts("alice", 5, 5),
    )
    assert kinds(evidence(*facts)) == [DiagnosisKind.HEALTHY]


def test_diagnose_ledger_write_failed_mentions_a_later_adjustment() -> None:
    facts, _ = WRITE_FAILURES["finalized transaction never credited"]
    ev = evidence(*facts, ledger(7, LedgerKind.ADJUSTMENT, 5))
    [first] = diagnose(ev, NOW, SLA)
    assert "adjustments since: #7 +5" in first.evidence_lines[0]


@pytest.mark.parametrize(
    "facts",
    [
        (intent(), attempt("pending", code="tx_not_final"), chain(S1, "confirmed")),
        (intent(), attempt("pending", code="tx_not_found"), ChainFacts(S1, ChainStatus.NOT_FOUND)),
        (*CREDITED, chain(S1)),
    ],
    ids=["not final yet", "not on chain", "credited"],
)
def test_diagnose_ledger_write_failed_needs_a_final_uncredited_transaction(
    facts: tuple[Fact, ...],
) -> None:
    assert DiagnosisKind.LEDGER_WRITE_FAILED not in kinds(evidence(*facts))


REJECTIONS = {
    "rules rejected it": (
        intent(),
        attempt("pending", code="tx_not_final", rid="req-1", ago=timedelta(minutes=9)),
        attempt("rejected", code="wrong_mint", rid="req-2"),
    ),
    "signature used by another intent": (
        intent(),
        attempt("conflict", code="signature_already_used", rid="req-1"),
    ),
    "landed but the rules refused it": (
        intent(),
        attempt("rejected", code="underpaid", rid="req-1"),
        chain(S1, "finalized"),
    ),
    "failed on chain": (
        intent(),
        attempt("pending", code="tx_not_final", rid="req-1"),
        chain(S1, "confirmed", err='{"InstructionError": [0, "Custom"]}'),
    ),
}


@pytest.mark.parametrize("facts", list(REJECTIONS.values()), ids=list(REJECTIONS))
def test_diagnose_tx_rejected(facts: tuple[Fact, ...]) -> None:
    [first] = diagnose(evidence(*facts), NOW, SLA)
    assert first.kind is DiagnosisKind.TX_REJECTED
    last = [a for a in facts if isinstance(a, AttemptFacts)][-1]
    code = last.code if last.outcome != "pending" else "failed_on_chain"
    assert f"{code} x1" in first.summary
    assert first.request_ids == [
        a.request_id for a in facts if isinstance(a, AttemptFacts) and a.request_id
    ]


def test_diagnose_tx_rejected_names_each_code_with_its_count() -> None:
    ev = evidence(
        intent(),
        intent(I2),
        attempt("rejected", code="wrong_mint"),
        attempt("rejected", code="wrong_mint", intent=I2, sig=S2),
        attempt("rejected", code="underpaid", sig=S2),
    )
    [first] = diagnose(ev, NOW, SLA)
    assert "wrong_mint x2, underpaid x1" in first.summary


def test_diagnose_ignores_a_refused_extra_signature_on_a_credited_intent() -> None:
    ev = evidence(*CREDITED, attempt("conflict", sig=S2, code="intent_already_confirmed"))
    assert kinds(ev) == [DiagnosisKind.HEALTHY]


STALE = {
    "never verified, past the SLA": (intent(age=2 * H),),
    "verify still pending past expiry": (
        intent(age=timedelta(minutes=20)),
        attempt("pending", code="tx_not_found", rid="req-p"),
    ),
}


@pytest.mark.parametrize("facts", list(STALE.values()), ids=list(STALE))
def test_diagnose_stale_pending(facts: tuple[Fact, ...]) -> None:
    [first] = diagnose(evidence(*facts), NOW, SLA)
    assert first.kind is DiagnosisKind.STALE_PENDING
    assert "beyond the 1h00m SLA" in first.summary
    assert "PENDING for" in first.evidence_lines[0]
    assert first.request_ids == [
        a.request_id for a in facts if isinstance(a, AttemptFacts) and a.request_id
    ]


def test_diagnose_stale_pending_leaves_an_intent_a_rejection_explains() -> None:
    ev = evidence(intent(age=2 * H), attempt("rejected", code="unbound_payment"))
    assert kinds(ev) == [DiagnosisKind.TX_REJECTED]


HEALTHY = {
    "credited once": CREDITED,
    "pending within the SLA": (intent(age=timedelta(minutes=5)),),
    "duplicate verifies of a credit": (*CREDITED, attempt("duplicate"), attempt("duplicate")),
    "expired intent left alone": (intent(status=IntentStatus.EXPIRED, age=3 * H),),
}


@pytest.mark.parametrize("facts", list(HEALTHY.values()), ids=list(HEALTHY))
def test_diagnose_healthy(facts: tuple[Fact, ...]) -> None:
    assert kinds(evidence(*facts)) == [DiagnosisKind.HEALTHY]


def test_diagnose_unknown_subject_shows_what_the_chain_knows() -> None:
    subject = Subject(SubjectKind.SIGNATURE, S1)
    [only] = diagnose(evidence(chain(S1), subject=subject), NOW, SLA)
    assert only.kind is DiagnosisKind.UNKNOWN_SUBJECT
    assert "never presented to verify" in only.evidence_lines[1]
    assert kinds(evidence()) == [DiagnosisKind.UNKNOWN_SUBJECT]


def test_diagnose_orders_findings_by_severity() -> None:
    ev = evidence(
        *DUPLICATES["two purchases of one signature"],
        intent(uuid.UUID(int=3), age=2 * H),  # stale
        intent(uuid.UUID(int=4)),
        attempt("rejected", intent=uuid.UUID(int=4), sig=S2, code="wrong_mint"),
        BalanceFacts("alice", 9, 10),  # write failed
    )
    assert kinds(ev) == [
        DiagnosisKind.DUPLICATE_CREDIT,
        DiagnosisKind.LEDGER_WRITE_FAILED,
        DiagnosisKind.TX_REJECTED,
        DiagnosisKind.STALE_PENDING,
    ]


def test_diagnose_notes_an_unavailable_rpc_and_a_truncated_lookup() -> None:
    down = ChainFacts(S1, ChainStatus.RPC_UNAVAILABLE, detail="HTTP 503")
    [only] = diagnose(evidence(*CREDITED, down, truncated=True), NOW, SLA)
    assert only.kind is DiagnosisKind.HEALTHY
    assert only.evidence_lines[-2:] == [
        "a lookup limit was reached: only the latest records were read",
        "chain status unknown: RPC unavailable (HTTP 503)",
    ]


def test_evidence_identifies_users_wallets_signatures_intents_and_window() -> None:
    ev = evidence(*DUPLICATES["two purchases of one signature"])
    assert (ev.users, ev.wallets, ev.signatures, ev.intent_ids) == (
        ["alice"],
        [WALLET],
        [S1],
        [I1, I2],
    )
    assert ev.first_seen == NOW - timedelta(minutes=10)
    assert ev.last_seen == NOW


# --- window summary ---------------------------------------------------------------------

T0 = NOW - H


def row(outcome: str, code: str | None, n: int, minute: int = 0) -> AttemptSummaryRow:
    at = T0 + timedelta(minutes=minute)
    return AttemptSummaryRow(outcome, code, n, at, at + timedelta(minutes=1))


@pytest.mark.parametrize(
    ("failing_users", "scope"),
    [(0, Scope.NONE), (1, Scope.SINGLE_USER), (2, Scope.WIDESPREAD), (40, Scope.WIDESPREAD)],
)
def test_summarise_scope_from_distinct_failing_users(failing_users: int, scope: Scope) -> None:
    summary = summarise(Window(T0, NOW), [], FailingUsers(failing_users, 0))
    assert summary.scope is scope


def test_summarise_counts_failures_by_code_and_totals_by_outcome() -> None:
    rows = [
        row("confirmed", None, 50, 0),
        row("rejected", "wrong_mint", 3, 10),
        row("rejected", "underpaid", 7, 20),
        row("pending", "rpc_unavailable", 4, 5),
        row("pending", "tx_not_final", 9, 1),
        row("paused", None, 2, 30),
        row("conflict", "signature_already_used", 1, 40),
    ]
    top = (("bob", 6), ("carol", 2))
    summary = summarise(Window(T0, NOW), rows, FailingUsers(3, 2, top), still_pending=4)
    assert summary.attempts == 76
    assert summary.by_outcome["pending"] == 13
    assert summary.failures_by_code == {
        "underpaid": 7,
        "rpc_unavailable": 4,
        "wrong_mint": 3,
        "signature_already_used": 1,
    }
    assert (summary.first_failure, summary.last_failure) == (
        T0 + timedelta(minutes=5),
        T0 + timedelta(minutes=41),
    )
    assert summary.top_failing_users == top
    assert (summary.failing_users, summary.failing_wallets, summary.still_pending) == (3, 2, 4)


# --- chain facts ------------------------------------------------------------------------


class FakeRpc:
    def __init__(self, answer: list[dict[str, Any] | None] | Exception) -> None:
        self.answer = answer
        self.asked: list[list[str]] = []

    async def get_signature_statuses(
        self, signatures: Sequence[str], *, search_transaction_history: bool = True
    ) -> list[dict[str, Any] | None]:
        assert search_transaction_history
        self.asked.append(list(signatures))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


S3 = str(Signature(bytes([3]) * 64))


async def test_chain_facts_reads_found_failed_missing_and_old_node_statuses() -> None:
    rpc = FakeRpc(
        [
            {"slot": 9, "confirmations": None, "err": None, "confirmationStatus": "finalized"},
            {"slot": 10, "confirmations": 3, "err": {"InstructionError": [0, {"Custom": 1}]}},
            None,
        ]
    )
    facts = await chain_facts(rpc, [S1, S2, S1, S3])
    assert rpc.asked == [[S1, S2, S3]]
    assert facts[0] == ChainFacts(S1, ChainStatus.FOUND, "finalized", None, 9)
    assert facts[0].landed
    assert facts[1].failed
    assert facts[1].err == '{"InstructionError": [0, {"Custom": 1}]}'
    assert facts[2] == ChainFacts(S3, ChainStatus.NOT_FOUND)


async def test_chain_facts_old_node_null_confirmations_means_finalized() -> None:
    [facts] = await chain_facts(FakeRpc([{"slot": 1, "confirmations": None, "err": None}]), [S1])
    assert facts.confirmation_status == "finalized"


async def test_chain_facts_says_rpc_unavailable_instead_of_raising() -> None:
    facts = await chain_facts(FakeRpc(RpcUnavailable("getSignatureStatuses", "HTTP 503")), [S1])
    assert facts == [ChainFacts(S1, ChainStatus.RPC_UNAVAILABLE, detail="HTTP 503")]


async def test_chain_facts_asks_nothing_for_no_signatures() -> None:
    rpc = FakeRpc([])
    assert await chain_facts(rpc, []) == []
    assert rpc.asked == []
