"""Triage evidence, pure: the subject `/pay-triage` names and the facts read about it.

A subject is an intent id, a transaction signature, a wallet or a user id. `core.triage_db`
reads the facts (intents, verification attempts, ledger transactions, balances, and the
chain's signature statuses) into one `Evidence`; `core.triage.rules` decides from it and
`core.triage.diagnosis` words it.
"""

from __future__ import annotations

import enum
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from solders.pubkey import Pubkey
from solders.signature import Signature

from core.errors import InvalidInput
from core.ledger import LedgerKind
from core.purchases import IntentStatus

T = TypeVar("T")

# --- subjects ---------------------------------------------------------------------------


class SubjectKind(enum.StrEnum):
    USER = "user"
    WALLET = "wallet"
    SIGNATURE = "signature"
    INTENT = "intent"


@dataclass(frozen=True, slots=True)
class Subject:
    kind: SubjectKind
    value: str
    explicit: bool = False  # named with a prefix ("user:..."): never re-read as another kind


_PREFIXES = {
    "user": SubjectKind.USER,
    "wallet": SubjectKind.WALLET,
    "tx": SubjectKind.SIGNATURE,
    "sig": SubjectKind.SIGNATURE,
    "signature": SubjectKind.SIGNATURE,
    "intent": SubjectKind.INTENT,
}
MAX_USER_ID_LENGTH = 200  # as purchase_intents.user_id


def classify_subject(text: str) -> Subject:
    """What `/pay-triage <arg>` names: an intent id (a UUID), a tx signature (base58, 64
    bytes), a wallet (base58, 32 bytes) or else a user id (the JWT `sub`).

    A prefix (`user:`, `wallet:`, `tx:`/`sig:`/`signature:`, `intent:`) forces the kind, for
    user ids that look like a UUID or a public key. Raises `InvalidInput` (`invalid_subject`).
    """
    value = text.strip()
    head, sep, rest = value.partition(":")
    kind = _PREFIXES.get(head.lower()) if sep else None
    if kind is not None:
        return _explicit(kind, rest.strip())
    if not value or len(value) > MAX_USER_ID_LENGTH or any(c.isspace() for c in value):
        raise InvalidInput(
            "give one user id, wallet, tx signature or intent id", code="invalid_subject"
        )
    for guess in (SubjectKind.INTENT, SubjectKind.SIGNATURE, SubjectKind.WALLET):
        canonical = _canonical(guess, value)
        if canonical is not None:
            return Subject(guess, canonical)
    return Subject(SubjectKind.USER, value)


def _explicit(kind: SubjectKind, value: str) -> Subject:
    if kind is SubjectKind.USER:
        if not value or len(value) > MAX_USER_ID_LENGTH:
            raise InvalidInput("user id must be 1 to 200 characters", code="invalid_subject")
        return Subject(kind, value, explicit=True)
    canonical = _canonical(kind, value)
    if canonical is None:
        raise InvalidInput(f"{value!r} is not a valid {kind.value}", code="invalid_subject")
    return Subject(kind, canonical, explicit=True)


def _canonical(kind: SubjectKind, value: str) -> str | None:
    try:
        if kind is SubjectKind.INTENT:
            return str(uuid.UUID(value))
        if kind is SubjectKind.SIGNATURE:
            return str(Signature.from_string(value)) if len(value) <= 90 else None
        if kind is SubjectKind.WALLET:
            return str(Pubkey.from_string(value)) if len(value) <= 44 else None
    except ValueError:
        return None
    return value


# --- evidence ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntentFacts:
    id: uuid.UUID
    user_id: str
    credits: int
    amount: int  # token base units
    wallet: str | None
    status: IntentStatus
    tx_signature: str | None
    reject_code: str | None
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    id: int
    intent_id: uuid.UUID
    user_id: str
    signature: str
    request_id: str | None
    source: str
    outcome: str  # confirmed | duplicate | pending | rejected | conflict | paused
    code: str | None
    detail: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    transaction_id: int
    kind: LedgerKind
    user_id: str
    amount: int  # credits this transaction moved on the user's account (signed)
    intent_id: uuid.UUID | None
    purchase_signature: str | None
    reverses_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BalanceFacts:
    user_id: str
    cached: int  # user_balances (0 when the row is missing)
    entries_sum: int  # what the entries say


class ChainStatus(enum.StrEnum):
    FOUND = "found"
    NOT_FOUND = "not found"
    RPC_UNAVAILABLE = "rpc unavailable"


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """One signature's `getSignatureStatuses` answer."""

    signature: str
    status: ChainStatus
    confirmation_status: str | None = None  # processed | confirmed | finalized
    err: str | None = None  # the node's `err`, as JSON text
    slot: int | None = None
    detail: str = ""  # why the RPC gave no answer

    @property
    def landed(self) -> bool:
        """Final on chain without error: the payment exists for good."""
        return (
            self.status is ChainStatus.FOUND
            and self.err is None
            and self.confirmation_status == "finalized"
        )

    @property
    def failed(self) -> bool:
        return self.status is ChainStatus.FOUND and self.err is not None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything triage read about one subject; the tuples are ordered oldest first."""

    subject: Subject
    intents: tuple[IntentFacts, ...] = ()
    attempts: tuple[AttemptFacts, ...] = ()
    ledger: tuple[LedgerFacts, ...] = ()
    balances: tuple[BalanceFacts, ...] = ()
    chain: tuple[ChainFacts, ...] = ()
    truncated: bool = False  # a limit cut the lookup short

    @property
    def found(self) -> bool:
        return bool(self.intents or self.attempts or self.ledger)

    @property
    def users(self) -> list[str]:
        return unique(
            [i.user_id for i in self.intents]
            + [a.user_id for a in self.attempts]
            + [t.user_id for t in self.ledger]
            + ([self.subject.value] if self.subject.kind is SubjectKind.USER else [])
        )

    @property
    def wallets(self) -> list[str]:
        return unique([i.wallet for i in self.intents if i.wallet])

    @property
    def signatures(self) -> list[str]:
        return unique(
            ([self.subject.value] if self.subject.kind is SubjectKind.SIGNATURE else [])
            + [i.tx_signature for i in self.intents if i.tx_signature]
            + [a.signature for a in self.attempts]
            + [t.purchase_signature for t in self.ledger if t.purchase_signature]
        )

    @property
    def intent_ids(self) -> list[uuid.UUID]:
        return unique([i.id for i in self.intents] + [a.intent_id for a in self.attempts])

    @property
    def first_seen(self) -> datetime | None:
        return min(self._times, default=None)

    @property
    def last_seen(self) -> datetime | None:
        return max(self._times, default=None)

    @property
    def _times(self) -> list[datetime]:
        return (
            [i.created_at for i in self.intents]
            + [a.created_at for a in self.attempts]
            + [t.created_at for t in self.ledger]
        )


def unique(values: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(values))


# --- reading evidence -------------------------------------------------------------------

# Attempt outcomes that refuse a signature for an intent.
REFUSED_OUTCOMES = frozenset({"rejected", "conflict"})


class EvidenceIndex:
    """The evidence indexed the ways the diagnosis rules (and a report) look at it."""

    def __init__(self, ev: Evidence) -> None:
        self.ev = ev
        self.intents = {i.id: i for i in ev.intents}
        self.by_intent: defaultdict[uuid.UUID, list[AttemptFacts]] = defaultdict(list)
        self.by_pair: defaultdict[tuple[uuid.UUID, str], list[AttemptFacts]] = defaultdict(list)
        for a in sorted(ev.attempts, key=lambda a: (a.created_at, a.id)):
            self.by_intent[a.intent_id].append(a)
            self.by_pair[(a.intent_id, a.signature)].append(a)
        reversed_ids = {t.reverses_id for t in ev.ledger if t.kind is LedgerKind.REVERSAL}
        purchases = [t for t in ev.ledger if t.kind is LedgerKind.PURCHASE]
        self.purchased = {t.intent_id for t in purchases}
        self.live = sorted(
            (t for t in purchases if t.transaction_id not in reversed_ids),
            key=lambda t: t.transaction_id,
        )
        self.credited_signatures = {t.purchase_signature for t in self.live}
        self.chain = {c.signature: c for c in ev.chain}

    def adjustments_since(self, user: str, since: datetime) -> str:
        found = [
            t
            for t in self.ev.ledger
            if t.kind is LedgerKind.ADJUSTMENT
            and t.user_id == user
            and t.amount > 0
            and t.created_at >= since
        ]
        if not found:
            return ""
        txs = ", ".join(f"#{t.transaction_id} +{t.amount}" for t in found)
        return f" (adjustments since: {txs}; one may already reconcile this)"


def describe_chain(c: ChainFacts) -> str:
    """One line for a signature's chain status."""
    if c.status is ChainStatus.NOT_FOUND:
        return f"chain: {c.signature} not found"
    err = f", failed: {c.err}" if c.err is not None else ""
    return f"chain: {c.signature} {c.confirmation_status or 'found'} at slot {c.slot}{err}"


def describe_attempt(a: AttemptFacts) -> str:
    """One line for an attempt: outcome, code, why (if refused), when, where, request id."""
    code = f" {a.code}" if a.code else ""
    shown = a.outcome in REFUSED_OUTCOMES or a.outcome == "credit_failed"
    detail = f": {a.detail}" if a.detail and shown else ""
    rid = f", request {a.request_id}" if a.request_id else ""
    return f"{a.outcome}{code}{detail} at {format_ts(a.created_at)} via {a.source}{rid}"


def format_ts(at: datetime) -> str:
    """UTC, to the second, as log lines show it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_age(span: timedelta) -> str:
    """A duration the way people say it: 45m, 2h05m, 3d4h."""
    minutes = int(span.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{mins:02d}m" if hours else f"{mins}m"
