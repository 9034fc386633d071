"""The timeline's pure rules: what each audit record says, and which incidents it joins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.errors import InvalidInput
from core.incidents.rules import channel_name, check_role, check_severity
from core.incidents.timeline import AuditRow, Span, TimelineEntry, assign, describe, should_post

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def row(action: str, on: str = "x", seq: int = 10, source: str = "slack", **after: Any) -> AuditRow:
    return AuditRow(seq, seq, AT, "U1", source, action, on, {}, after)


@pytest.mark.parametrize(
    ("audit", "kind", "text"),
    [
        (row("gate.verify.close", reason="dups"), "gate", "Verify gate CLOSED — dups"),
        (row("gate.verify.open", reason="smoke test passed"), "gate", "Verify gate OPENED"),
        (row("gate.client_retries.close", reason="x"), "gate", "Frontend retries PAUSED"),
        (row("smoke.run", passed=False, failed=["verify"]), "smoke", "FAILED: verify"),
        (
            row(
                "adjustment.apply",
                "adjustment:7",
                credits=50,
                user_id="al",
                ledger_tx=3,
                approvers=["M1"],
            ),
            "adjustment",
            "Adjustment #7 APPLIED: +50 credits for al, ledger tx 3, approved by M1",
        ),
        (
            row("adjustment.expire", "adjustment:7", credits=-5, user_id="al"),
            "adjustment",
            "Adjustment #7 expired",
        ),
        (row("recon.run", "recon_run:4", mode="full", zero_drift=True), "recon", "zero drift"),
        (
            row("triage.lookup", subject="user al", diagnosis=["healthy: ok"]),
            "triage",
            "Triage of user al: healthy: ok",
        ),
        (row("incident.pin", "incident:1", author="U2", text="503s"), "incident", "📌 U2: 503s"),
    ],
)
def test_describe(audit: AuditRow, kind: str, text: str) -> None:
    described = describe(audit)
    assert described is not None
    assert described.kind == kind
    assert text in described.text


@pytest.mark.parametrize(
    "audit",
    [
        row("intent.create"),
        row("ledger.debit"),
        # the scheduled run every few minutes, drift unchanged: not worth a line
        row("recon.run", source="scheduler", zero_drift=False, new_findings=[]),
        row("recon.run", source="scheduler", zero_drift=True, new_findings=["f"]),
    ],
)
def test_not_runbook_actions(audit: AuditRow) -> None:
    assert describe(audit) is None


def test_a_scheduled_run_with_new_drift_is_on_the_timeline() -> None:
    found = describe(row("recon.run", source="scheduler", zero_drift=False, new_findings=["f"]))
    assert found is not None


def test_assign_by_span_and_by_subject() -> None:
    spans = {1: Span(opened=5, closed=20), 2: Span(opened=15, closed=None)}
    rows = [
        row("gate.verify.close", seq=4, reason="before any"),
        row("gate.verify.close", seq=10, reason="one"),
        row("gate.verify.close", seq=18, reason="both"),
        row("incident.note", "incident:2", seq=19, text="only two"),
        row("gate.verify.open", seq=25, reason="after one closed"),
    ]
    got = [(i, r.seq) for i, r, _ in assign(rows, spans)]
    assert got == [(1, 10), (1, 18), (2, 18), (2, 19), (2, 25)]


def test_self_posted_entries_are_not_posted_again() -> None:
    note = TimelineEntry(1, 1, 1, AT, "U1", "incident", "Note", "slack", "incident.note")
    assert not should_post(note)
    assert should_post(TimelineEntry(1, 1, 1, AT, "U1", "incident", "Note", "cli", "incident.note"))
    assert should_post(TimelineEntry(1, 1, 1, AT, "U1", "gate", "x", "slack", "gate.verify.close"))


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("sev2", 2), (" 3 ", 3)])
def test_severity(text: str, value: int) -> None:
    assert check_severity(text) == value


@pytest.mark.parametrize("text", ["0", "4", "high", ""])
def test_bad_severity(text: str) -> None:
    with pytest.raises(InvalidInput):
        check_severity(text)


def test_roles_and_channel_names() -> None:
    assert check_role("Commander", "<@U123|ana>")[1] == "U123"
    assert check_role("comms", "@U9")[1] == "U9"
    with pytest.raises(InvalidInput):
        check_role("scribe", "U1")
    with pytest.raises(InvalidInput):
        check_role("comms", "<script>")
    assert channel_name(12, "Duplicate credits on /verify!") == "inc-12-duplicate-credits-on-verify"
