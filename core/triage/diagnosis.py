"""Triage's diagnoses: their kinds by severity, the findings the rules collect, and the words
each diagnosis is told in (its summary with the runbook's next step, its evidence lines).
The rules that find them are `core.triage.rules`."""

from __future__ import annotations

import enum
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from core.triage.evidence import (
    AttemptFacts,
    ChainStatus,
    Evidence,
    EvidenceIndex,
    Subject,
    describe_chain,
    format_age,
    unique,
)


class DiagnosisKind(enum.StrEnum):
    DUPLICATE_CREDIT = "duplicate_credit"
    LEDGER_WRITE_FAILED = "ledger_write_failed"
    TX_REJECTED = "tx_rejected"
    STALE_PENDING = "stale_pending"
    HEALTHY = "healthy"
    UNKNOWN_SUBJECT = "unknown_subject"


# Most severe first: money leaking out beats money owed, which beats a refused payment.
SEVERITY = (
    DiagnosisKind.DUPLICATE_CREDIT,
    DiagnosisKind.LEDGER_WRITE_FAILED,
    DiagnosisKind.TX_REJECTED,
    DiagnosisKind.STALE_PENDING,
)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    kind: DiagnosisKind
    summary: str  # one sentence, with the runbook's next step
    evidence_lines: list[str]
    request_ids: list[str]  # of the attempts involved: find their log lines with these


@dataclass(frozen=True, slots=True)
class TriageReport:
    subject: Subject  # as finally read (a UUID matching no intent may be read as a user id)
    evidence: Evidence
    diagnoses: list[Diagnosis]  # most severe first, never empty

    @property
    def primary(self) -> Diagnosis:
        return self.diagnoses[0]


@dataclass
class Findings:
    """Lines and attempts collected per diagnosis kind while the rules run."""

    lines: defaultdict[DiagnosisKind, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: defaultdict[DiagnosisKind, list[AttemptFacts]] = field(
        default_factory=lambda: defaultdict(list)
    )
    covered: set[uuid.UUID] = field(default_factory=set)  # intents a finding explains
    users: defaultdict[DiagnosisKind, list[str]] = field(default_factory=lambda: defaultdict(list))
    credits: Counter[DiagnosisKind] = field(default_factory=Counter)  # excess or missing
    codes: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        kind: DiagnosisKind,
        line: str,
        *,
        user: str,
        attempts: Iterable[AttemptFacts] = (),
        intent: uuid.UUID | None = None,
        credits: int = 0,
    ) -> None:
        self.lines[kind].append(line)
        self.attempts[kind].extend(attempts)
        self.users[kind].append(user)
        self.credits[kind] += credits
        if intent is not None:
            self.covered.add(intent)


def diagnosis_of(kind: DiagnosisKind, f: Findings, sla: timedelta) -> Diagnosis:
    users = ", ".join(unique(f.users[kind]))
    n = len(f.lines[kind])
    credits = f.credits[kind]
    if kind is DiagnosisKind.DUPLICATE_CREDIT:
        summary = (
            f"Duplicate credit (idempotency failure): {credits} excess credits for {users}. "
            "Contain: close the verify gate if it may still be happening; recover: reverse "
            "the excess credits with an audit note."
        )
    elif kind is DiagnosisKind.LEDGER_WRITE_FAILED:
        summary = (
            f"Valid payment but ledger write failed: {credits} credits missing for {users}. "
            "Recover: re-verify, else a controlled reconciliation adjustment; read the "
            "credit logs by request id."
        )
    elif kind is DiagnosisKind.TX_REJECTED:
        codes = ", ".join(f"{code} x{count}" for code, count in f.codes.most_common())
        summary = (
            f"Transaction invalid/rejected for {users}: {codes}. Nothing to credit for these "
            "transactions; the user presents the right signature or pays a new intent."
        )
    else:
        summary = (
            f"{n} intent(s) of {users} stuck in PENDING beyond the {format_age(sla)} SLA. If the "
            "user paid, re-verify with the signature; otherwise the intent was abandoned."
        )
    return Diagnosis(kind, summary, list(f.lines[kind]), request_ids(f.attempts[kind]))


def healthy(v: EvidenceIndex) -> Diagnosis:
    ev = v.ev
    statuses = Counter(i.status.value for i in ev.intents)
    lines = []
    if statuses:
        lines.append(
            f"{len(ev.intents)} intent(s): "
            + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
        )
    lines.append(f"{len(v.live)} purchase credit(s), each once")
    lines += [f"user {b.user_id}: balance {b.cached} = sum of entries" for b in ev.balances]
    lines += [describe_chain(c) for c in ev.chain if c.status is not ChainStatus.RPC_UNAVAILABLE]
    return Diagnosis(
        DiagnosisKind.HEALTHY,
        "Healthy: every confirmed payment is credited exactly once, balances match the ledger, "
        "and no intent is stuck.",
        lines,
        request_ids(ev.attempts)[-5:],
    )


def unknown(v: EvidenceIndex) -> Diagnosis:
    s = v.ev.subject
    lines = [f"no intent, verification attempt or ledger transaction matches {s.kind} {s.value}"]
    for c in v.ev.chain:
        if c.status is ChainStatus.FOUND:
            lines.append(describe_chain(c) + ": never presented to verify; ask for the intent id")
    return Diagnosis(
        DiagnosisKind.UNKNOWN_SUBJECT, f"Nothing in payops matches this {s.kind}.", lines, []
    )


def notes(ev: Evidence) -> list[str]:
    notes = []
    if ev.truncated:
        notes.append("a lookup limit was reached: only the latest records were read")
    down = [c for c in ev.chain if c.status is ChainStatus.RPC_UNAVAILABLE]
    if down:
        notes.append(f"chain status unknown: RPC unavailable ({down[0].detail})")
    return notes


def request_ids(attempts: Iterable[AttemptFacts]) -> list[str]:
    ordered = sorted(attempts, key=lambda a: (a.created_at, a.id))
    return unique(a.request_id for a in ordered if a.request_id)
