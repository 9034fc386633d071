"""The runbook's triage, pure: what a subject is, which window, and the diagnosis.

Triage step 1 of the runbook: identify the affected user(s), wallet(s), tx signature(s),
intent id(s) and time window, and whether the issue is single-user or widespread; step 3
names the four diagnoses. `core.triage.service` gathers the `Evidence` (SQL, RPC); everything
here decides from plain values and takes `now` as an argument.

`diagnose()` returns every finding, one `Diagnosis` per kind, most severe first (the first
is the primary). The rules, by severity:

    duplicate_credit     idempotency failure, credits applied more than once (contain first:
                         close the verify gate while it may still be happening)
      - two or more unreversed purchase ledger transactions for one signature or one intent;
      - a purchase ledger transaction its intent does not account for (the intent is not
        CONFIRMED, or is confirmed by another signature);
      - a cached balance above the sum of the user's entries (spendable credits no entry backs).
    ledger_write_failed  a valid payment with no credit
      - a CONFIRMED intent without any purchase ledger transaction;
      - an attempt with outcome `confirmed` for an intent without a purchase;
      - a cached balance below the sum of the user's entries;
      - a signature finalized on chain without error, presented for an intent that has no
        credit, whose latest attempt with it was neither refused nor credited (the credit
        transaction rolled back, or no verify ran since the transaction became final).
    tx_rejected          the verification rules (or the chain) refused the payment
      - an intent not CONFIRMED whose latest attempt with a signature was `rejected` or
        `conflict` (the codes are named);
      - a signature that failed on chain (`err` set), presented for an intent not CONFIRMED.
    stale_pending        a PENDING intent older than the SLA, or past its expiry, that no
                         finding above explains (last attempt shown, or "never verified").
    healthy              evidence found and none of the above.
    unknown_subject      nothing in the database matches (the chain status is still shown).

Reversed purchases (a `reversal` ledger transaction points at them) no longer count as
credits, so a duplicate already recovered per the runbook reads healthy.
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.purchases import IntentStatus
from core.triage.evidence import (
    REFUSED_OUTCOMES,
    AttemptFacts,
    ChainStatus,
    Evidence,
    EvidenceIndex,
    LedgerFacts,
    Subject,
    describe_attempt,
    describe_chain,
    format_age,
    format_ts,
    unique,
)

# --- diagnosis --------------------------------------------------------------------------


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
class _Findings:
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


def diagnose(evidence: Evidence, now: datetime, pending_sla: timedelta) -> list[Diagnosis]:
    """The runbook's diagnoses for this evidence, most severe first (never empty).

    One `Diagnosis` per kind found, each with its evidence lines and the request ids of the
    attempts involved; `healthy` or `unknown_subject` only when nothing else applies. The
    rules are in this module's docstring.
    """
    view = EvidenceIndex(evidence)
    found = _Findings()
    if evidence.found:
        _duplicate_credits(view, found)
        _write_failures(view, found)
        _rejections(view, found)
        _stale_pending(view, found, now, pending_sla)
    result = [_diagnosis(kind, found, pending_sla) for kind in SEVERITY if found.lines[kind]]
    if not result:
        result = [_healthy(view) if evidence.found else _unknown(view)]
    notes = _notes(evidence)
    if notes:
        first = result[0]
        result[0] = Diagnosis(
            first.kind, first.summary, first.evidence_lines + notes, first.request_ids
        )
    return result


def _duplicate_credits(v: EvidenceIndex, f: _Findings) -> None:
    kind = DiagnosisKind.DUPLICATE_CREDIT
    reported: set[frozenset[int]] = set()
    by_signature = _group(v.live, lambda t: t.purchase_signature)
    by_intent = _group(v.live, lambda t: t.intent_id)
    for label, groups in (("signature", by_signature), ("intent", by_intent)):
        for value, txs in groups.items():
            ids = frozenset(t.transaction_id for t in txs)
            if len(txs) < 2 or ids in reported:
                continue
            reported.add(ids)
            credits = ", ".join(
                f"#{t.transaction_id} +{t.amount} to {t.user_id} for intent {t.intent_id} at "
                f"{format_ts(t.created_at)}"
                for t in txs
            )
            f.add(
                kind,
                f"{label} {value} credited {len(txs)} times: {credits}",
                user=txs[0].user_id,
                attempts=[a for t in txs for a in _crediting(v, t)],
                intent=txs[0].intent_id,
                credits=sum(t.amount for t in txs[1:]),  # the first credit was due
            )
    in_groups = {tx for ids in reported for tx in ids}
    for t in v.live:
        intent = v.intents.get(t.intent_id) if t.intent_id else None
        if intent is None or t.transaction_id in in_groups:
            continue
        if intent.status is IntentStatus.CONFIRMED and intent.tx_signature == t.purchase_signature:
            continue
        # A credit its intent does not account for: nothing paid for it as far as we know.
        state = (
            f"confirmed by {intent.tx_signature}"
            if intent.status is IntentStatus.CONFIRMED
            else intent.status.value
        )
        f.add(
            kind,
            f"ledger tx #{t.transaction_id} +{t.amount} credited intent {intent.id} for "
            f"signature {t.purchase_signature}, but the intent is {state}",
            user=t.user_id,
            attempts=_crediting(v, t),
            intent=intent.id,
            credits=t.amount,
        )
    for b in v.ev.balances:
        if b.cached > b.entries_sum:
            f.add(
                kind,
                f"user {b.user_id}: cached balance {b.cached} is {b.cached - b.entries_sum} "
                f"above the sum of their ledger entries ({b.entries_sum})",
                user=b.user_id,
                credits=b.cached - b.entries_sum,
            )


def _group(
    txs: list[LedgerFacts], key: Callable[[LedgerFacts], object]
) -> dict[object, list[LedgerFacts]]:
    groups: defaultdict[object, list[LedgerFacts]] = defaultdict(list)
    for t in txs:
        groups[key(t)].append(t)
    return groups


def _crediting(v: EvidenceIndex, t: LedgerFacts) -> list[AttemptFacts]:
    """The attempts that wrote (or claim to have written) a purchase credit."""
    return [
        a
        for a in v.ev.attempts
        if (a.intent_id, a.signature, a.outcome) == (t.intent_id, t.purchase_signature, "confirmed")
    ]


def _write_failures(v: EvidenceIndex, f: _Findings) -> None:
    kind = DiagnosisKind.LEDGER_WRITE_FAILED
    for i in v.ev.intents:
        if i.id in v.purchased:
            continue
        confirmed = [a for a in v.by_intent[i.id] if a.outcome == "confirmed"]
        if i.status is IntentStatus.CONFIRMED or confirmed:
            by = f" by {i.tx_signature}" if i.tx_signature else ""
            times = ", ".join(format_ts(a.created_at) for a in confirmed)
            said = f"; attempts say confirmed at {times}" if confirmed else ""
            f.add(
                kind,
                f"intent {i.id} ({i.user_id}, {i.credits} credits) is {i.status.value}{by}"
                f"{said}, but has no purchase ledger transaction"
                + v.adjustments_since(i.user_id, i.created_at),
                user=i.user_id,
                attempts=v.by_intent[i.id],
                intent=i.id,
                credits=i.credits,
            )
    for b in v.ev.balances:
        if b.cached < b.entries_sum:
            f.add(
                kind,
                f"user {b.user_id}: cached balance {b.cached} is {b.entries_sum - b.cached} "
                f"below the sum of their ledger entries ({b.entries_sum})",
                user=b.user_id,
                credits=b.entries_sum - b.cached,
            )
    for (intent_id, sig), attempts in v.by_pair.items():
        chain = v.chain.get(sig)
        intent = v.intents.get(intent_id)
        if intent is None or sig in v.credited_signatures:
            continue
        if intent.status is IntentStatus.CONFIRMED or intent.id in v.purchased:
            continue
        last = attempts[-1]
        if last.outcome in REFUSED_OUTCOMES:
            continue  # the rules refused a transaction that landed: that is tx_rejected
        if chain is not None and chain.landed:
            seen = f"is finalized on chain without error (slot {chain.slot})"
            why = "the credit write failed, or no verify ran since it was final"
        elif last.outcome == "credit_failed":
            seen = "passed the verification rules"
            why = "the credit write failed"
        else:
            continue
        f.add(
            kind,
            f"signature {sig} {seen} and was "
            f"presented for intent {intent.id} ({intent.user_id}, {intent.credits} credits), "
            f"which is still {intent.status.value} with no credit; latest attempt: "
            f"{describe_attempt(last)} — {why}"
            + v.adjustments_since(intent.user_id, intent.created_at),
            user=intent.user_id,
            attempts=attempts,
            intent=intent.id,
            credits=intent.credits,
        )


def _rejections(v: EvidenceIndex, f: _Findings) -> None:
    kind = DiagnosisKind.TX_REJECTED
    for (intent_id, sig), attempts in v.by_pair.items():
        intent = v.intents.get(intent_id)
        if intent_id in v.purchased or (intent and intent.status is IntentStatus.CONFIRMED):
            continue  # credited: a refused extra signature cost the user nothing
        chain = v.chain.get(sig)
        last = attempts[-1]
        if last.outcome in REFUSED_OUTCOMES:
            f.codes[last.code or last.outcome] += 1
            line = f"intent {intent_id}: signature {sig} {describe_attempt(last)}"
            if len(attempts) > 1:
                line += f" (latest of {len(attempts)} attempts)"
        elif chain is not None and chain.failed:
            f.codes["failed_on_chain"] += 1
            line = f"intent {intent_id}: signature {sig} failed on chain: {chain.err}"
        else:
            continue
        f.add(kind, line, user=last.user_id, attempts=attempts, intent=intent_id)


def _stale_pending(v: EvidenceIndex, f: _Findings, now: datetime, sla: timedelta) -> None:
    for i in v.ev.intents:
        if i.status is not IntentStatus.PENDING or i.id in f.covered:
            continue
        age = now - i.created_at
        if age <= sla and now < i.expires_at:
            continue
        attempts = v.by_intent[i.id]
        last = (
            f"latest attempt {describe_attempt(attempts[-1])} ({len(attempts)} in all)"
            if attempts
            else "never verified"
        )
        expired = f", expired {format_ts(i.expires_at)}" if now >= i.expires_at else ""
        f.add(
            DiagnosisKind.STALE_PENDING,
            f"intent {i.id} ({i.user_id}, {i.credits} credits) PENDING for {format_age(age)}"
            f"{expired}: {last}",
            user=i.user_id,
            attempts=attempts,
            intent=i.id,
        )


def _diagnosis(kind: DiagnosisKind, f: _Findings, sla: timedelta) -> Diagnosis:
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
    request_ids = _request_ids(f.attempts[kind])
    return Diagnosis(kind, summary, list(f.lines[kind]), request_ids)


def _healthy(v: EvidenceIndex) -> Diagnosis:
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
        _request_ids(ev.attempts)[-5:],
    )


def _unknown(v: EvidenceIndex) -> Diagnosis:
    s = v.ev.subject
    lines = [f"no intent, verification attempt or ledger transaction matches {s.kind} {s.value}"]
    for c in v.ev.chain:
        if c.status is ChainStatus.FOUND:
            lines.append(describe_chain(c) + ": never presented to verify; ask for the intent id")
    return Diagnosis(
        DiagnosisKind.UNKNOWN_SUBJECT, f"Nothing in payops matches this {s.kind}.", lines, []
    )


def _notes(ev: Evidence) -> list[str]:
    notes = []
    if ev.truncated:
        notes.append("a lookup limit was reached: only the latest records were read")
    down = [c for c in ev.chain if c.status is ChainStatus.RPC_UNAVAILABLE]
    if down:
        notes.append(f"chain status unknown: RPC unavailable ({down[0].detail})")
    return notes


def _request_ids(attempts: Iterable[AttemptFacts]) -> list[str]:
    ordered = sorted(attempts, key=lambda a: (a.created_at, a.id))
    return unique(a.request_id for a in ordered if a.request_id)
