"""The alert builders: valid Block Kit, what they say, and their buttons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot import alert_blocks
from bot.alert_blocks import OPEN_TICKET, RUN_TRIAGE, parse_ticket_value, ticket_value
from bot.alerts import DRIFT_FINGERPRINT, alert_item, drift_item
from core.daily import DailyFigures
from core.recon import DRIFT_KIND, AlertItem, AlertPost, FindingKind, ReconRun, Severity
from tests.recon_script import scripted_finding, scripted_run

NOW = datetime(2025, 5, 6, 7, 8, tzinfo=UTC)
SIG = "5" * 87


def valid(blocks: list[dict[str, Any]]) -> list[Block]:
    parsed = Block.parse_all(blocks)
    assert len(parsed) == len(blocks)
    for block in parsed:
        block.validate_json()
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(ids) == len(set(ids)), "block ids must be unique in a message"
    assert len(blocks) <= 50
    return parsed


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e["value"])
        for blk in blocks
        if blk["type"] == "actions"
        for e in blk["elements"]
    ]


def facts(**overrides: Any) -> ReconRun:
    """A window run over the last day with drift and three open findings."""
    values: dict[str, Any] = {
        "id": 7,
        "window_start": NOW - timedelta(days=1),
        "window_end": NOW,
        "drift_credits": -5,
        "drift_tokens": -50_000,
        "findings": FINDINGS,
        "chain_checked": True,
        "zero_drift": False,
    }
    if overrides.get("full"):
        values["window_start"] = None
    values.update(overrides)
    return scripted_run(**values)


FINDINGS = [
    scripted_finding(
        "fp-dup", FindingKind.DUPLICATE_SIGNATURE, Severity.CRITICAL, ("alice",), (SIG,), credits=5
    ),
    scripted_finding(
        "fp-stale",
        FindingKind.STALE_PENDING,
        Severity.WARNING,
        intent_ids=("i-1", "i-2", "i-3", "i-4"),
    ),
    scripted_finding(
        "fp-chain",
        FindingKind.UNMATCHED_PAYMENT,
        Severity.CRITICAL,
        signatures=(SIG,),
        tokens=20_000,
    ),
]


def test_announcement_says_what_how_many_and_offers_ticket_and_triage() -> None:
    items = [alert_item(f) for f in FINDINGS]
    message = alert_blocks.announcement(items, facts())

    valid(message.blocks)
    assert message.blocks[0]["type"] == "header"
    assert "3 new findings" in message.blocks[0]["text"]["text"]
    assert ":rotating_light:" in message.blocks[0]["text"]["text"]  # there are critical ones
    assert "-5 credits" in message.text
    assert "duplicate_signature" in message.text
    pressed = buttons(message.blocks)
    tickets = [v for a, v in pressed if a == OPEN_TICKET]
    assert set(tickets[:3]) == {"fp-dup", "fp-stale", "fp-chain"}
    # the "all" button: critical first, then by kind
    assert parse_ticket_value(tickets[-1]) == ["fp-dup", "fp-chain", "fp-stale"]
    triage = {v for a, v in pressed if a == RUN_TRIAGE}
    assert triage == {"alice", SIG, "i-1"}  # a user first, else a signature, else an intent


def test_announcement_shows_the_top_examples_and_counts_the_rest() -> None:
    many = [
        scripted_finding(f"fp-{n:02d}", FindingKind.STALE_PENDING, Severity.WARNING)
        for n in range(12)
    ]
    many.append(
        scripted_finding(
            "fp-crit", FindingKind.NEGATIVE_BALANCE, Severity.CRITICAL, user_ids=("bob",)
        )
    )
    message = alert_blocks.announcement([alert_item(f) for f in many], facts())

    valid(message.blocks)
    examples = [b for b in message.blocks if "`fp-" in b.get("text", {}).get("text", "")]
    assert len(examples) == alert_blocks.TOP_EXAMPLES
    assert "fp-crit" in examples[0]["text"]["text"]  # critical first
    assert any("8 more" in str(b) for b in message.blocks)
    assert "*stale_pending*: 12 (warning)" in str(message.blocks)
    assert ":warning:" not in message.blocks[0]["text"]["text"]


def test_announcement_of_warnings_only_is_a_warning() -> None:
    message = alert_blocks.announcement([alert_item(FINDINGS[1])], facts(drift_credits=0))
    valid(message.blocks)
    assert ":warning:" in message.blocks[0]["text"]["text"]
    assert "1 new finding" in message.blocks[0]["text"]["text"]


def test_long_details_and_many_fingerprints_stay_within_slack_limits() -> None:
    huge = [
        scripted_finding(
            f"fingerprint-{n:04d}-" + "x" * 40,
            FindingKind.STALE_PENDING,
            Severity.CRITICAL,
            detail="d" * 5000,
        )
        for n in range(200)
    ]
    message = alert_blocks.announcement([alert_item(f) for f in huge], facts())
    valid(message.blocks)
    assert len(message.text) <= 3000
    value = [v for a, v in buttons(message.blocks) if a == OPEN_TICKET][-1]
    assert len(value) <= 2000
    assert all(fp.startswith("fingerprint-") for fp in parse_ticket_value(value))


@pytest.mark.parametrize(
    ("fingerprints", "expected"),
    [
        ([], ""),
        (["a"], "a"),
        (["a", "b", "c"], "a,b,c"),
        (["x" * 1999, "y"], "x" * 1999),
        (["x" * 1998, "y"], "x" * 1998 + ",y"),
    ],
)
def test_ticket_value_keeps_what_fits(fingerprints: list[str], expected: str) -> None:
    assert ticket_value(fingerprints) == expected
    assert parse_ticket_value(expected) == [f for f in expected.split(",") if f]


def _post(item: AlertItem, posted_at: datetime) -> AlertPost:
    return AlertPost(item, posted_at, "C_ALERTS", "111.000001", None, None, None, None)


def test_escalation_mentions_managers_users_and_groups() -> None:
    posts = [_post(alert_item(f), NOW - timedelta(hours=3)) for f in FINDINGS[:2]]
    message = alert_blocks.escalation(posts, ["U_MGR", "S_MANAGERS"], timedelta(hours=1), NOW)

    valid(message.blocks)
    text = str(message.blocks)
    assert "<@U_MGR>" in text
    assert "<!subteam^S_MANAGERS>" in text
    assert "over 1h" in message.blocks[0]["text"]["text"]
    assert "3h00m" in text
    assert {v for a, v in buttons(message.blocks) if a == OPEN_TICKET} >= {"fp-dup", "fp-stale"}


def test_escalation_without_managers_says_so() -> None:
    message = alert_blocks.escalation(
        [_post(alert_item(FINDINGS[0]), NOW - timedelta(hours=2))], [], timedelta(hours=1), NOW
    )
    valid(message.blocks)
    assert "PAYOPS_SLACK_MANAGERS" in message.text


def test_resolution_lists_what_resolved() -> None:
    posts = [_post(alert_item(f), NOW) for f in FINDINGS]
    message = alert_blocks.resolution(posts, facts(full=True, drift_credits=0))
    valid(message.blocks)
    assert "Resolved by reconciliation run #7 (full): 3 finding(s)" in message.text
    assert "fp-chain" in message.text


def test_drift_is_a_critical_pseudo_finding() -> None:
    run = scripted_run(drift_credits=3, drift_tokens=30_000, zero_drift=False)
    item = drift_item(run)
    assert (item.fingerprint, item.kind, item.severity) == (
        DRIFT_FINGERPRINT,
        DRIFT_KIND,
        Severity.CRITICAL,
    )
    assert "+3 credits" in item.summary
    message = alert_blocks.announcement([item], run)
    valid(message.blocks)
    # Drift is no reconciliation finding a ticket could hold, nor one subject to triage.
    assert buttons(message.blocks) == []
    with_finding = alert_blocks.announcement([item, alert_item(FINDINGS[0])], run)
    valid(with_finding.blocks)
    assert [v for a, v in buttons(with_finding.blocks) if a == OPEN_TICKET] == ["fp-dup"]


def test_alert_item_summarizes_a_finding() -> None:
    finding = scripted_finding(
        "fp",
        FindingKind.CONFIRMED_WITHOUT_CREDIT,
        Severity.CRITICAL,
        user_ids=("u1", "u2", "u3", "u4"),
        signatures=(SIG,),
        credits=7,
        detail="confirmed on chain, no credit",
    )
    item = alert_item(finding)
    assert item.summary.startswith("confirmed on chain, no credit\n")
    assert "credits +7" in item.summary
    assert "`u1`, `u2`, `u3` (+1)" in item.summary
    assert item.triage == "u1"


def test_daily_summary_is_valid_block_kit() -> None:
    figures = DailyFigures(
        since=NOW - timedelta(days=1),
        until=NOW,
        intents_created=10,
        intents_confirmed=8,
        intents_expired=1,
        intents_rejected=1,
        credits_purchased=80,
        verify_attempts={"confirmed": 8, "rejected": 2},
        recovered=2,
        pending_now=3,
        stale_pending_now=0,
        adjustments_applied=1,
        adjustment_credits=5,
        adjustments_waiting=0,
        open_incidents=0,
        job_failures={"recovery": 1},
    )
    message = alert_blocks.daily_summary(figures, facts(zero_drift=True, drift_credits=0), 2)
    valid(message.blocks)
    assert "zero drift" in message.text
    assert "recovery 1" in message.text
    none_yet = alert_blocks.daily_summary(figures, None, 0)
    valid(none_yet.blocks)
    assert "no reconciliation run yet" in none_yet.text
