"""The books tied to the chain, the pure part: what the treasury watcher's records mean.

While the treasury watcher runs, every change to the treasury token account is a recorded
flow (`core.watch`), so reconciliation can show the whole chain side from the database:

- the balance on chain equals the balance when watching began plus every recorded flow —
  a difference is tokens that moved without a transaction the watcher recorded
  (`treasury_balance_drift`);
- every inflow bound to an intent credited that intent: its intent is CONFIRMED by that very
  signature, or by a later payment that completed the price with it (a top-up: the credit's
  received amount covers every part), or still PENDING before its deadline (one part of an
  underpaid total that a top-up may complete) — otherwise the tokens sit at the treasury
  uncredited
  (`uncredited_inflow`);
- an inflow bound to no intent credited nothing (`unmatched_payment`, as the windowed look
  at the chain calls it);
- an outflow is treasury funds someone moved (`treasury_outflow`).

An applied adjustment naming a flow's signature settles an inflow; a closed incident whose
record names it settles any flow (a refund, a sweep to cold storage, explained). Fingerprints
cover the flow's signature (the account for the balance), never amounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from core.recon.facts import BalanceTie, FlowFacts
from core.recon.findings import Finding, FindingKind, Severity, finding


def balance_tie_findings(tie: BalanceTie) -> list[Finding]:
    """The balance on chain against the books; nothing when they were not compared."""
    if not tie.compared or tie.on_chain == tie.expected:
        return []
    assert tie.on_chain is not None
    difference = tie.on_chain - tie.expected
    newest = tie.cursor_signature or "none since watching began"
    return [
        finding(
            FindingKind.TREASURY_BALANCE_DRIFT,
            Severity.CRITICAL,
            # no slot in the text: the same drift reads the same run after run
            detail=f"treasury token account {tie.account} holds {tie.on_chain} base units on "
            f"chain, the books {tie.expected} (start {tie.start_balance} + recorded flows "
            f"{tie.recorded}, newest recorded {newest}): {difference:+d} moved without a "
            "transaction the watcher recorded",
            signatures=[tie.cursor_signature],
            tokens=difference,
            subjects=[f"account:{tie.account}"],
        )
    ]


def deadline(
    created_at: datetime, expires_at: datetime, pending_sla: timedelta, grace: timedelta
) -> datetime:
    """When an unpaid intent may be closed (as `core.purchases.deadline` decides)."""
    return max(created_at + pending_sla, expires_at + grace)


def flow_findings(
    f: FlowFacts, *, now: datetime, pending_sla: timedelta, grace: timedelta
) -> list[Finding]:
    """One recorded flow against the ledger."""
    subject = [f"sig:{f.signature}"]
    if f.amount < 0:
        if f.explained:
            return []
        return [
            finding(
                FindingKind.TREASURY_OUTFLOW,
                Severity.WARNING,
                detail=f"{f.signature}: {-f.amount} base units left the treasury token account "
                f"(fee payer {f.payer}, slot {f.slot}): someone moved treasury funds; "
                "record who and why in an incident naming the signature",
                signatures=[f.signature],
                tokens=f.amount,
                subjects=subject,
            )
        ]
    if f.adjusted or f.explained:
        return []
    if f.intent_id is None:
        if f.credited:
            return []
        return [
            finding(
                FindingKind.UNMATCHED_PAYMENT,
                Severity.CRITICAL,
                detail=f"{f.signature}: {f.amount} base units reached the treasury token "
                f"account (recorded by the watcher, no intent named; payer {f.payer}) and no "
                "intent or adjustment credits them",
                signatures=[f.signature],
                tokens=f.amount,
                subjects=subject,
            )
        ]
    why = _uncredited(f, now=now, pending_sla=pending_sla, grace=grace)
    if why is None:
        return []
    return [
        finding(
            FindingKind.UNCREDITED_INFLOW,
            Severity.CRITICAL,
            detail=f"{f.signature}: {f.amount} base units bound to intent {f.intent_id} "
            f"reached the treasury token account and credited nothing: {why}",
            user_ids=[f.user_id],
            signatures=[f.signature],
            intent_ids=[f.intent_id],
            tokens=f.amount,
            subjects=subject,
        )
    ]


def _uncredited(
    f: FlowFacts, *, now: datetime, pending_sla: timedelta, grace: timedelta
) -> str | None:
    """Why a bound inflow did not credit its intent, or None when it did (or still may)."""
    if f.intent_status == "CONFIRMED":
        if f.intent_signature == f.signature or f.in_topup:
            return None
        return f"the intent is CONFIRMED by {f.intent_signature}"
    if f.intent_status == "PENDING":
        assert f.intent_created_at is not None
        assert f.intent_expires_at is not None
        closes = deadline(f.intent_created_at, f.intent_expires_at, pending_sla, grace)
        if now < closes:
            return None  # still open: a part of an underpaid total, or not verified yet
        return f"the intent is still PENDING past its deadline ({closes:%Y-%m-%d %H:%M} UTC)"
    return f"the intent is {f.intent_status}"
