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

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from core.purchases import IntentStatus
from core.triage.diagnosis import (
    SEVERITY,
    Diagnosis,
    DiagnosisKind,
    Findings,
    diagnosis_of,
    healthy,
    notes,
    unknown,
)
from core.triage.evidence import (
    REFUSED_OUTCOMES,
    AttemptFacts,
    Evidence,
    EvidenceIndex,
    LedgerFacts,
    describe_attempt,
    format_age,
    format_ts,
)


def diagnose(evidence: Evidence, now: datetime, pending_sla: timedelta) -> list[Diagnosis]:
    """The runbook's diagnoses for this evidence, most severe first (never empty).

    One `Diagnosis` per kind found, each with its evidence lines and the request ids of the
    attempts involved; `healthy` or `unknown_subject` only when nothing else applies. The
    rules are in this module's docstring.
    """
    view = EvidenceIndex(evidence)
    found = Findings()
    if evidence.found:
        _duplicate_credits(view, found)
        _write_failures(view, found)
        _rejections(view, found)
        _stale_pending(view, found, now, pending_sla)
    result = [diagnosis_of(kind, found, pending_sla) for kind in SEVERITY if found.lines[kind]]
    if not result:
        result = [healthy(view) if evidence.found else unknown(view)]
    said = notes(evidence)
    if said:
        first = result[0]
        result[0] = Diagnosis(
            first.kind, first.summary, first.evidence_lines + said, first.request_ids
        )
    return result


def _duplicate_credits(v: EvidenceIndex, f: Findings) -> None:
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


def _write_failures(v: EvidenceIndex, f: Findings) -> None:
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


def _rejections(v: EvidenceIndex, f: Findings) -> None:
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


def _stale_pending(v: EvidenceIndex, f: Findings, now: datetime, sla: timedelta) -> None:
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
