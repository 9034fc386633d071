"""Scripted reconciliation runs for the alert tests: real `core.recon` `Finding`s and
`ReconRun`s made up by hand, so the alerts are tested apart from the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.recon import Finding, FindingKind, ReconRun, ReconTotals, RunMode, Severity


def scripted_finding(
    fingerprint: str,
    kind: FindingKind,
    severity: Severity,
    user_ids: tuple[str, ...] = (),
    signatures: tuple[str, ...] = (),
    intent_ids: tuple[str, ...] = (),
    credits: int = 0,
    tokens: int = 0,
    detail: str = "something is off",
) -> Finding:
    return Finding(
        fingerprint=fingerprint,
        kind=kind,
        severity=severity,
        user_ids=user_ids,
        signatures=signatures,
        intent_ids=intent_ids,
        credits=credits,
        tokens=tokens,
        detail=detail,
    )


NO_TOTALS = ReconTotals(
    confirmed_intents=0,
    purchase_transactions=0,
    expected_credits=0,
    purchase_credits=0,
    correction_credits=0,
    corrections=0,
    expected_tokens=0,
    received_tokens=0,
    ledger_transactions=0,
    ledger_total=0,
)

_DEFAULT_START = object()  # a window over the last day unless the test names one


def scripted_run(
    *,
    full: bool = False,
    window_start: datetime | object | None = _DEFAULT_START,
    **fields: Any,
) -> ReconRun:
    """A run over the last day's intents (a window run) unless `window_start` is None: then
    a full run (`full`) or an incremental one. `fields` override the rest."""
    now = datetime.now(UTC)
    start = now - timedelta(days=1) if window_start is _DEFAULT_START else window_start
    assert start is None or isinstance(start, datetime)
    mode = RunMode.FULL if full else RunMode.INCREMENTAL
    if start is not None:
        mode = RunMode.WINDOW
    values: dict[str, Any] = {
        "id": 7,
        "started_at": now,
        "finished_at": now,
        "mode": mode,
        "window_start": start,
        "window_end": now,
        "watermark": None,
        "totals": NO_TOTALS,
        "drift_credits": 0,
        "drift_tokens": 0,
        "zero_drift": True,
        "chain_checked": True,
        "findings": [],
        "new_findings": [],
        "resolved_findings": [],
    }
    values.update(fields)
    return ReconRun(**values)
