"""Audited credit adjustments: the pure rules (requests, reversals, approvals, warnings).

The runbook's recovery step corrects credits by hand: a missing credit is granted, a
duplicate credit is reversed, each "with an explicit audit note". Here a correction is a
request — signed credits, user, kind, references, reason, requester — that waits in
`PENDING_APPROVAL` until configured managers decide it:

    PENDING_APPROVAL ──approve (enough approvals)──▶ APPLIED
                     ──reject (any one)───────────▶ REJECTED
                     ──past expires_at────────────▶ EXPIRED

Never applied without an approval from a configured manager who is not the requester;
above `two_approvals_above` credits (absolute), two distinct managers. Applying writes the
ledger transaction and the audit note atomically (`core.adjustments_db`).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.audit import is_unverified, unverified
from core.chain.signatures import parse_signature
from core.errors import Conflict, Forbidden, InvalidInput, Unprocessable
from core.ledger import LedgerKind

MAX_ADJUSTMENT_CREDITS = 1_000_000_000
MAX_REASON = 500
MAX_REFS = 20
MAX_TICKET = 200
_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]+$")


class AdjustmentKind(enum.StrEnum):
    MISSING_CREDIT = "missing_credit"
    DUPLICATE_REVERSAL = "duplicate_reversal"
    OTHER = "other"


class AdjustmentStatus(enum.StrEnum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPLIED = "APPLIED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class DecisionKind(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Resolution(enum.StrEnum):
    """What a decision leads to."""

    WAITING = "waiting"  # recorded; more approvals are needed
    APPLY = "apply"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Refs:
    """What an adjustment points at: on-chain payments, intents, a ticket."""

    tx_signatures: tuple[str, ...] = ()
    intent_ids: tuple[str, ...] = ()
    ticket: str | None = None


@dataclass(frozen=True, slots=True)
class AdjustmentPolicy:
    """Who may approve, when two approvals are needed, and how long a request waits.

    `managers` holds resolved user ids (a Slack user group is expanded by the caller).
    """

    managers: frozenset[str]
    two_approvals_above: int  # absolute credits; above it, two distinct managers approve
    ttl: timedelta
    max_credits: int = MAX_ADJUSTMENT_CREDITS

    def approvals_for(self, credits: int) -> int:
        """How many distinct managers must approve an adjustment of `credits`."""
        return 2 if abs(credits) > self.two_approvals_above else 1


@dataclass(frozen=True, slots=True)
class AdjustmentRequest:
    """A validated request, not yet stored; the requester is the actor who stores it."""

    user_id: str
    credits: int
    kind: AdjustmentKind
    refs: Refs
    reason: str
    approvals_required: int
    created_at: datetime
    expires_at: datetime
    reverses_ledger_tx: int | None = None


@dataclass(frozen=True, slots=True)
class Adjustment:
    id: int
    user_id: str
    credits: int  # signed: positive gives credits, negative takes them
    kind: AdjustmentKind
    refs: Refs
    reason: str
    requester: str
    requester_source: str
    status: AdjustmentStatus
    approvals_required: int
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    reverses_ledger_tx: int | None
    applied_ledger_tx: int | None
    slack_channel: str | None
    slack_thread_ts: str | None

    @property
    def ledger_kind(self) -> LedgerKind:
        """Reversals are posted as ledger reversals, linked to the reversed transaction."""
        return LedgerKind.REVERSAL if self.reverses_ledger_tx is not None else LedgerKind.ADJUSTMENT


@dataclass(frozen=True, slots=True)
class Decision:
    adjustment_id: int
    approver: str
    decision: DecisionKind
    note: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    resolution: Resolution
    decision: Decision  # the decision to record
    approvers: tuple[str, ...]  # distinct approving managers, this decision included
    approvals_required: int


@dataclass(frozen=True, slots=True)
class ReversibleTx:
    """The facts of a ledger transaction someone asks to reverse."""

    id: int
    kind: LedgerKind
    user_id: str
    user_amount: int  # the user's entry in it: positive for a credit
    reversed_by: int | None  # the reversal already posted for it, if any
    intent_id: str | None = None
    purchase_signature: str | None = None


def parse_refs(tokens: Iterable[str]) -> Refs:
    """Sort free-form references into signatures, intent ids and a ticket.

    A UUID is an intent id; a long base58 string is a transaction signature (and must be a
    valid one, so a mangled paste is refused rather than filed as a ticket); `ticket:X` or
    anything else is the ticket (several are joined).
    """
    signatures: list[str] = []
    intents: list[str] = []
    tickets: list[str] = []
    for raw in tokens:
        token = raw.strip().strip(",;")
        if not token:
            continue
        if token.lower().startswith("ticket:"):
            tickets.append(token[len("ticket:") :].strip())
            continue
        try:
            intents.append(str(uuid.UUID(token)))
            continue
        except ValueError:
            pass
        if len(token) >= 64 and _BASE58.match(token):
            signatures.append(parse_signature(token))
        else:
            tickets.append(token)
    signatures, intents = _unique(signatures), _unique(intents)
    if len(signatures) > MAX_REFS or len(intents) > MAX_REFS:
        raise InvalidInput(f"at most {MAX_REFS} references of each kind", code="invalid_refs")
    ticket = ", ".join(_unique(t for t in tickets if t)) or None
    if ticket is not None and len(ticket) > MAX_TICKET:
        raise InvalidInput(f"the ticket is at most {MAX_TICKET} characters", code="invalid_refs")
    return Refs(tuple(signatures), tuple(intents), ticket)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def infer_kind(credits: int, refs: Refs) -> AdjustmentKind:
    """A positive correction pointing at a payment or an intent is a missing credit."""
    if credits > 0 and (refs.tx_signatures or refs.intent_ids):
        return AdjustmentKind.MISSING_CREDIT
    return AdjustmentKind.OTHER


def new_request(
    *,
    user_id: str,
    credits: int,
    reason: str,
    policy: AdjustmentPolicy,
    now: datetime,
    refs: Refs | Sequence[str] = (),
    kind: AdjustmentKind | None = None,
    reverses_ledger_tx: int | None = None,
) -> AdjustmentRequest:
    """A validated adjustment request, or `InvalidInput` saying what is wrong."""
    user_id = user_id.strip()
    if not 1 <= len(user_id) <= 200:
        raise InvalidInput("user must be 1 to 200 characters", code="invalid_user_id")
    if isinstance(credits, bool) or not isinstance(credits, int):
        raise InvalidInput("credits must be an integer", code="invalid_credits")
    if credits == 0 or abs(credits) > policy.max_credits:
        raise InvalidInput(
            f"credits must be non-zero and at most {policy.max_credits} either way",
            code="invalid_credits",
        )
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a reason is required: it is the audit note", code="invalid_reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is at most {MAX_REASON} characters", code="invalid_reason")
    parsed = refs if isinstance(refs, Refs) else parse_refs(refs)
    kind = kind or infer_kind(credits, parsed)
    if kind is AdjustmentKind.MISSING_CREDIT and credits < 0:
        raise InvalidInput("a missing credit is a positive adjustment", code="invalid_credits")
    if kind is AdjustmentKind.DUPLICATE_REVERSAL and credits > 0:
        raise InvalidInput("a duplicate reversal is a negative adjustment", code="invalid_credits")
    if reverses_ledger_tx is not None and kind is not AdjustmentKind.DUPLICATE_REVERSAL:
        raise InvalidInput("only a duplicate reversal reverses a ledger transaction")
    return AdjustmentRequest(
        user_id=user_id,
        credits=credits,
        kind=kind,
        refs=parsed,
        reason=reason,
        approvals_required=policy.approvals_for(credits),
        created_at=now,
        expires_at=now + policy.ttl,
        reverses_ledger_tx=reverses_ledger_tx,
    )


def reversal_request(
    original: ReversibleTx, *, reason: str, policy: AdjustmentPolicy, now: datetime
) -> AdjustmentRequest:
    """A request to take back the credit of `original` (a duplicate purchase or adjustment).

    The amount is exactly the credit the transaction gave, negated; its signature and intent
    become the references. Debits, reversals and negative adjustments are not credits, and a
    transaction reverses once.
    """
    if original.kind not in (LedgerKind.PURCHASE, LedgerKind.ADJUSTMENT):
        raise Unprocessable(
            f"ledger transaction {original.id} is a {original.kind.value}: only a purchase or "
            "adjustment credit can be reversed",
            code="not_reversible",
        )
    if original.user_amount <= 0:
        raise Unprocessable(
            f"ledger transaction {original.id} took credits ({original.user_amount}): only a "
            "credit can be reversed; request a positive adjustment instead",
            code="not_reversible",
        )
    if original.reversed_by is not None:
        raise Conflict(
            f"ledger transaction {original.id} is already reversed by {original.reversed_by}",
            code="already_reversed",
        )
    refs = Refs(
        tx_signatures=(original.purchase_signature,) if original.purchase_signature else (),
        intent_ids=(original.intent_id,) if original.intent_id else (),
    )
    return new_request(
        user_id=original.user_id,
        credits=-original.user_amount,
        reason=reason,
        policy=policy,
        now=now,
        refs=refs,
        kind=AdjustmentKind.DUPLICATE_REVERSAL,
        reverses_ledger_tx=original.id,
    )


def is_due(adjustment: Adjustment, now: datetime) -> bool:
    """A pending request past its expiry: it can no longer be approved."""
    return adjustment.status is AdjustmentStatus.PENDING_APPROVAL and now >= adjustment.expires_at


def decide(
    adjustment: Adjustment,
    decisions_so_far: Sequence[Decision],
    approver: str,
    decision: DecisionKind,
    policy: AdjustmentPolicy,
    now: datetime,
    note: str | None = None,
) -> Outcome:
    """Judge one manager's decision on a request; raises when it may not be taken.

    Any reject rejects. The request applies once the distinct approving managers reach the
    requirement — the larger of what was required when it was requested and what the policy
    requires now, so a policy change never lowers the bar for waiting requests. Approvals by
    people no longer configured as managers do not count.
    """
    if is_unverified(approver):
        raise Forbidden(
            "an unverified (break-glass) operator cannot decide adjustments: decide with an "
            "operator token or in Slack",
            code="unverified_actor",
        )
    if approver not in policy.managers:
        raise Forbidden("only a configured manager may decide adjustments", code="not_a_manager")
    if adjustment.requester in (approver, unverified(approver)):
        raise Forbidden("the requester cannot decide their own adjustment", code="self_approval")
    if adjustment.status is not AdjustmentStatus.PENDING_APPROVAL:
        raise Conflict(
            f"adjustment {adjustment.id} is {adjustment.status.value}, no longer pending",
            code="adjustment_not_pending",
        )
    if now >= adjustment.expires_at:
        raise Conflict(
            f"adjustment {adjustment.id} expired at {adjustment.expires_at.isoformat()}",
            code="adjustment_expired",
        )
    if any(d.approver == approver for d in decisions_so_far):
        raise Conflict(f"you already decided adjustment {adjustment.id}", code="already_decided")
    recorded = Decision(adjustment.id, approver, decision, note, now)
    required = max(adjustment.approvals_required, policy.approvals_for(adjustment.credits))
    approvers = tuple(
        _unique(
            d.approver
            for d in [*decisions_so_far, recorded]
            if d.decision is DecisionKind.APPROVE
            and d.approver in policy.managers
            and d.approver != adjustment.requester
        )
    )
    if decision is DecisionKind.REJECT:
        resolution = Resolution.REJECT
    elif len(approvers) >= required:
        resolution = Resolution.APPLY
    else:
        resolution = Resolution.WAITING
    return Outcome(resolution, recorded, approvers, required)


def warnings(
    adjustment: Adjustment | AdjustmentRequest, current_balance: int, *, applied: bool = False
) -> list[str]:
    """What the approvers must see before deciding: e.g. the balance would go negative.

    Corrections may take a balance below zero (the credits were already spent); they are
    allowed, but flagged here and by reconciliation. `applied`: the balance already holds
    the correction, and the warning says what it did.
    """
    found: list[str] = []
    before = current_balance - adjustment.credits if applied else current_balance
    after = before + adjustment.credits
    if adjustment.credits < 0 and after < 0:
        verb = "took" if applied else "takes"
        found.append(
            f"applying {verb} {adjustment.user_id}'s balance from {before} to {after} "
            "(below zero: the credits were probably spent already)"
        )
    elif before < 0:
        was = "was" if applied else "is"
        found.append(f"{adjustment.user_id}'s balance {was} already negative ({before})")
    return found
