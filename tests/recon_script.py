"""Scripted reconciliation runs for the alert tests: shaped like `core.recon`'s `Finding` and
`ReconRun` (what the alerts read of them), so the alerts are tested apart from the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Finding:
    fingerprint: str
    kind: str
    severity: str
    user_ids: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()
    intent_ids: tuple[str, ...] = ()
    credits: int = 0
    tokens: int = 0
    detail: str = "something is off"


@dataclass(frozen=True)
class Run:
    id: int = 7
    full: bool = False
    window_start: datetime | None = field(
        default_factory=lambda: datetime.now(UTC) - timedelta(days=1)
    )
    window_end: datetime = field(default_factory=lambda: datetime.now(UTC))
    findings: list[Finding] = field(default_factory=list)
    new_findings: list[Finding] = field(default_factory=list)
    resolved_findings: list[Finding] = field(default_factory=list)
    drift_credits: int = 0
    drift_tokens: int = 0
    zero_drift: bool = True
    chain_checked: bool = True
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
