"""Reconciliation totals, run modes, settlement and drift — pure.

The runbook's comparisons: verified (CONFIRMED) intents vs purchase credit transactions, and
expected credits (those intents' credits) vs applied credits (purchase credits plus the
corrections that name those intents: missing-credit adjustments, duplicate reversals and the
reversal of a purchase). A full run reads the flows from the whole database; an incremental
run adds what changed since the previous run's watermark to that run's flows (`Flows` are
additive), so it reads only the changes. That relies on the ledger being append-only (as
the database enforces): after rows were removed by hand (a restore), run a full run.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.recon.findings import Finding, FindingKind, Severity

# Findings whose tokens are drift: base units at the treasury that back no credit.
TOKEN_DRIFT_KINDS = frozenset(
    {
        FindingKind.UNMATCHED_PAYMENT,
        FindingKind.OVERPAYMENT,
        FindingKind.UNCREDITED_INFLOW,
        # signed: more (+) or fewer (-) tokens on chain than the watcher's books
        FindingKind.TREASURY_BALANCE_DRIFT,
    }
)
_SEVERITY_ORDER = {s: n for n, s in enumerate(Severity)}


class RunMode(enum.StrEnum):
    FULL = "full"  # every check over everything
    INCREMENTAL = "incremental"  # what changed since the last watermark, and open findings
    WINDOW = "window"  # intents created in a window, and open findings


def choose_mode(*, full: bool, window_start: datetime | None, has_watermark: bool) -> RunMode:
    """A window when one is given; else full when asked or when there is nothing to go on."""
    if window_start is not None:
        return RunMode.WINDOW
    if full or not has_watermark:
        return RunMode.FULL
    return RunMode.INCREMENTAL


@dataclass(frozen=True, slots=True)
class Watermark:
    """Where an incremental run starts: every row a transaction invisible to `snapshot` wrote
    carries a timestamp at or after `horizon` (the oldest open transaction's start)."""

    horizon: datetime
    snapshot: str  # pg_snapshot text
    snapshot_time: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "horizon": self.horizon.isoformat(),
            "snapshot": self.snapshot,
            "snapshot_time": self.snapshot_time.isoformat(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Watermark:
        return cls(
            horizon=datetime.fromisoformat(value["horizon"]),
            snapshot=str(value["snapshot"]),
            snapshot_time=datetime.fromisoformat(value["snapshot_time"]),
        )


@dataclass(frozen=True, slots=True)
class Flows:
    """The additive part of the totals."""

    confirmed_intents: int = 0
    expected_credits: int = 0
    expected_tokens: int = 0
    received_tokens: int = 0
    purchase_transactions: int = 0
    purchase_credits: int = 0
    ledger_transactions: int = 0
    ledger_total: int = 0

    def __add__(self, other: Flows) -> Flows:
        return Flows(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(Flows))
        )


@dataclass(frozen=True, slots=True)
class ReconTotals:
    """A run's totals; `by_kind` counts the findings open after it."""

    confirmed_intents: int
    purchase_transactions: int
    expected_credits: int  # credits of CONFIRMED intents
    purchase_credits: int  # credits posted by purchase transactions
    correction_credits: int  # net credits of corrections tied to those intents
    corrections: int  # how many correction ledger transactions
    expected_tokens: int  # base units the CONFIRMED intents asked for
    received_tokens: int  # base units they received
    ledger_transactions: int
    ledger_total: int  # the sum of every entry: 0
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def applied_credits(self) -> int:
        return self.purchase_credits + self.correction_credits

    @property
    def flows(self) -> Flows:
        return Flows(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Flows)})

    def count(self, kind: FindingKind) -> int:
        return self.by_kind.get(kind.value, 0)

    @property
    def duplicate_signatures(self) -> int:
        return self.count(FindingKind.DUPLICATE_SIGNATURE)

    @property
    def stale_pending(self) -> int:
        return self.count(FindingKind.STALE_PENDING)

    @property
    def failed_then_succeeded(self) -> int:
        return self.count(FindingKind.FAILED_THEN_SUCCEEDED)

    @property
    def negative_balances(self) -> int:
        return self.count(FindingKind.NEGATIVE_BALANCE)

    @property
    def unbalanced_transactions(self) -> int:
        return self.count(FindingKind.UNBALANCED_TRANSACTION)

    @property
    def balance_mismatches(self) -> int:
        return self.count(FindingKind.BALANCE_MISMATCH)

    @property
    def unmatched_payments(self) -> int:
        return self.count(FindingKind.UNMATCHED_PAYMENT)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "applied_credits": self.applied_credits}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ReconTotals:
        names = {f.name for f in dataclasses.fields(cls)} - {"by_kind"}
        return cls(
            **{n: int(value.get(n, 0)) for n in names},
            by_kind={str(k): int(v) for k, v in dict(value.get("by_kind") or {}).items()},
        )


def totals_of(
    flows: Flows, *, correction_credits: int, corrections: int, findings: Iterable[Finding]
) -> ReconTotals:
    """The totals: the flows, the corrections and the open findings counted by kind."""
    # keyed by the kind's text: the totals are stored as JSON and read back as they were
    by_kind: dict[str, int] = {}
    for f in findings:
        by_kind[f.kind.value] = by_kind.get(f.kind.value, 0) + 1
    return ReconTotals(
        **dataclasses.asdict(flows),
        correction_credits=correction_credits,
        corrections=corrections,
        by_kind=dict(sorted(by_kind.items())),
    )


@dataclass(frozen=True, slots=True)
class ReconRun:
    """A stored run: its scope, totals and drift, the findings open after it, what it found
    new and what it resolved. The engine builds it once and stores it; `core.recon.store`
    reads it back the same (`run_from_row`)."""

    id: int
    started_at: datetime
    finished_at: datetime
    mode: RunMode
    window_start: datetime | None  # set for window runs only
    window_end: datetime
    watermark: Watermark | None  # where the next incremental run starts; None for windows
    totals: ReconTotals
    drift_credits: int
    drift_tokens: int
    zero_drift: bool
    chain_checked: bool
    findings: list[Finding]  # open after the run, critical first
    new_findings: list[Finding]
    resolved_findings: list[Finding]

    @property
    def full(self) -> bool:
        return self.mode is RunMode.FULL

    @property
    def blocking_findings(self) -> list[Finding]:
        """The open findings that count against zero drift (all but info)."""
        return [f for f in self.findings if f.blocking]


@dataclass(frozen=True, slots=True)
class Settlement:
    open: list[Finding]  # open after the run: found now, or carried unchecked
    new: list[Finding]  # found now, not open before
    resolved: list[Finding]  # open before, checked again and not found
    carried: list[Finding]  # open before, not checkable by this run: kept as they were
    changed: list[Finding]  # open before, found again with other amounts or detail


def settle(
    before: Sequence[Finding], found: Iterable[Finding], carried: Callable[[Finding], bool]
) -> Settlement:
    """Compare a run's findings with those open before it.

    A finding open before and not found again is resolved, unless `carried` says this run
    could not check it (the chain side of a run without the chain): then it stays open as it
    was. The same fingerprint found twice in one run is one finding (the first).
    """
    now: dict[str, Finding] = {}
    for f in found:
        now.setdefault(f.fingerprint, f)
    previous = {f.fingerprint: f for f in before}
    kept = [f for fp, f in previous.items() if fp not in now and carried(f)]
    resolved = [f for fp, f in previous.items() if fp not in now and not carried(f)]
    new = [f for fp, f in now.items() if fp not in previous]
    return Settlement(
        open=ordered([*now.values(), *kept]),
        new=ordered(new),
        resolved=ordered(resolved),
        carried=ordered(kept),
        changed=[f for fp, f in now.items() if fp in previous and previous[fp] != f],
    )


def carried_unchecked(
    mode: RunMode, chain_attempted: bool, *, balance_compared: bool = True
) -> Callable[[Finding], bool]:
    """Which open findings a run cannot check, so they stay open as they were.

    `balance_compared` False: the treasury's balance was not compared with the watcher's
    books this run (no chain, or the watcher behind), so a balance drift stays open."""

    def carried(f: Finding) -> bool:
        if f.kind == FindingKind.CHAIN_UNCHECKED:
            return not chain_attempted
        if f.kind == FindingKind.TREASURY_BALANCE_DRIFT:
            return not balance_compared
        if f.kind == FindingKind.LEDGER_NOT_ZERO_SUM:
            return mode is RunMode.WINDOW  # a window does not sum the whole ledger
        return False

    return carried


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Critical first, then by kind and fingerprint: a stable order for people and tests."""
    return sorted(
        findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.kind.value, f.fingerprint)
    )


@dataclass(frozen=True, slots=True)
class Drift:
    credits: int  # expected minus applied, minus what was credited twice for one payment
    tokens: int  # base units at the treasury that back no credit
    zero: bool


def judge(totals: ReconTotals, open_findings: Sequence[Finding]) -> Drift:
    """The drift, and whether it is zero: totals equal and no open finding but info ones.

    A second credit for one payment (a duplicate) is neither a purchase nor a correction, so
    the totals do not show it; its finding's (negative) credits are added to the drift.
    """
    duplicated = sum(f.credits for f in open_findings if f.kind == FindingKind.DUPLICATE_SIGNATURE)
    credits = totals.expected_credits - totals.applied_credits + duplicated
    tokens = sum(f.tokens for f in open_findings if f.kind in TOKEN_DRIFT_KINDS)
    zero = credits == 0 and tokens == 0 and not any(f.blocking for f in open_findings)
    return Drift(credits, tokens, zero)
