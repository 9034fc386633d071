"""Drift alerts against a fake Slack: each finding announced once, escalated once, resolved
once in its thread; failed posts retried; the buttons (signed requests to the service)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block

from api.app import create_app
from bot import alerts
from bot.alert_blocks import OPEN_TICKET, RUN_TRIAGE
from bot.slack_app import add_slack, web_client
from core import recon
from core import recon as recon_tickets
from core.audit import Actor
from core.recon import FindingKind, ReconRun, Severity
from core.services import Services
from tests.recon_script import scripted_finding, scripted_run
from tests.slack_fake import FakeSlack, action_body, signed_headers
from tests.slack_rig import slack_services

pytestmark = pytest.mark.timeout(60)

ONCALL, MANAGER, STRANGER = "U_ONCALL", "U_MGR", "U_STRANGER"
SIG = "4" * 87
A = scripted_finding(
    "fp-a", FindingKind.DUPLICATE_SIGNATURE, Severity.CRITICAL, ("alice",), (SIG,), credits=5
)
B = scripted_finding(
    "fp-b", FindingKind.STALE_PENDING, Severity.WARNING, intent_ids=(str(uuid.uuid4()),)
)
C = scripted_finding(
    "fp-c", FindingKind.UNMATCHED_PAYMENT, Severity.CRITICAL, signatures=(SIG,), tokens=10_000
)
INFO = scripted_finding("fp-info", FindingKind.OVERPAYMENT, Severity.INFO, ("carol",))


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Rig:
    fake: FakeSlack
    services: Services
    pool: asyncpg.Pool
    clock: Clock

    async def publish(self, run: ReconRun) -> alerts.Published:
        return await alerts.publish_run(self.services, web_client(self.services), run)

    def posts(self) -> list[dict[str, Any]]:
        return self.fake.of("chat.postMessage")


@pytest.fixture
async def rig(pool: asyncpg.Pool) -> AsyncIterator[Rig]:
    fake = FakeSlack()
    await fake.start()
    clock = Clock()
    try:
        svc = slack_services(
            pool,
            fake,
            clock=clock,
            slack_alerts_channel="C_ALERTS",
            slack_oncall=ONCALL,
            slack_managers=f"{MANAGER},S_MANAGERS",
            alert_escalate_after_seconds=3600,
        )
        yield Rig(fake, svc, pool, clock)
    finally:
        await fake.close()


def _blocks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    raw = payload["blocks"]
    blocks: list[dict[str, Any]] = json.loads(raw) if isinstance(raw, str) else raw
    for block in Block.parse_all(blocks):
        block.validate_json()
    return blocks


def _values(payload: dict[str, Any], action_id: str) -> list[str]:
    return [
        e["value"]
        for b in _blocks(payload)
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == action_id
    ]


async def test_new_findings_are_announced_once(rig: Rig) -> None:
    first = await rig.publish(scripted_run(findings=[A, B, INFO], new_findings=[A, B, INFO]))
    again = await rig.publish(scripted_run(id=8, findings=[A, B, INFO]))
    more = await rig.publish(scripted_run(id=9, findings=[A, B, C, INFO], new_findings=[C]))

    assert (first.announced, again.announced, more.announced) == (2, 0, 1)
    posts = rig.posts()
    assert len(posts) == 2
    assert all(p["channel"] == "C_ALERTS" for p in posts)
    assert set(_values(posts[0], OPEN_TICKET)[:2]) == {"fp-a", "fp-b"}
    assert "fp-info" not in posts[0]["text"]  # info findings wait for the daily summary
    assert _values(posts[1], OPEN_TICKET)[0] == "fp-c"
    assert set(_values(posts[0], RUN_TRIAGE)) == {"alice", B.intent_ids[0]}
    rows = await rig.pool.fetch("SELECT fingerprint, ts FROM alert_posts ORDER BY fingerprint")
    assert [r["fingerprint"] for r in rows] == ["fp-a", "fp-b", "fp-c"]
    assert all(r["ts"] for r in rows)


async def test_an_open_finding_missed_earlier_is_announced(rig: Rig) -> None:
    # Not "new" in this run (e.g. it opened before Slack was configured): still announced once.
    await rig.publish(scripted_run(findings=[A]))
    await rig.publish(scripted_run(findings=[A]))
    assert len(rig.posts()) == 1


async def test_escalation_is_posted_once_to_the_managers(rig: Rig) -> None:
    await rig.publish(scripted_run(findings=[A, B], new_findings=[A, B]))
    rig.clock.offset = timedelta(minutes=30)
    early = await rig.publish(scripted_run(findings=[A, B]))
    await rig.publish(scripted_run(findings=[C], new_findings=[C]))
    rig.clock.offset = timedelta(hours=1, minutes=1)
    late = await rig.publish(scripted_run(findings=[A, B, C]))
    later = await rig.publish(scripted_run(findings=[A, B, C]))

    assert (early.escalated, late.escalated, later.escalated) == (0, 2, 0)
    escalations = [p for p in rig.posts() if ":sos:" in p["text"]]
    assert len(escalations) == 1
    text = escalations[0]["text"]
    assert "<@U_MGR>" in text
    assert "<!subteam^S_MANAGERS>" in text
    assert "fp-a" in text
    assert "fp-b" in text
    assert "fp-c" not in text  # announced only 31 minutes before
    assert "thread_ts" not in escalations[0]
    assert set(_values(escalations[0], OPEN_TICKET)) >= {"fp-a", "fp-b"}


async def test_resolution_is_posted_once_in_the_original_thread(rig: Rig) -> None:
    await rig.publish(scripted_run(findings=[A, B], new_findings=[A, B]))
    await rig.publish(scripted_run(findings=[C], new_findings=[C]))
    root_ab, root_c = (p for p in rig.fake.calls if p.method == "chat.postMessage")
    del root_c
    ts_ab = await rig.pool.fetchval("SELECT ts FROM alert_posts WHERE fingerprint = 'fp-a'")

    resolved = await rig.publish(scripted_run(id=10, findings=[B, C], resolved_findings=[A]))
    repeated = await rig.publish(scripted_run(id=11, findings=[B, C], resolved_findings=[A]))

    assert (resolved.resolved, repeated.resolved) == (1, 0)
    replies = [p for p in rig.posts() if p.get("thread_ts")]
    assert len(replies) == 1
    assert replies[0]["thread_ts"] == ts_ab
    assert replies[0]["channel"] == "C_ALERTS"
    assert "Resolved by reconciliation run #10" in replies[0]["text"]
    assert "fp-a" in replies[0]["text"]
    assert "fp-b" not in replies[0]["text"]
    _blocks(replies[0])
    assert root_ab.payload["channel"] == "C_ALERTS"

    # Back again after its resolution was posted: a new finding, announced again.
    back = await rig.publish(scripted_run(id=12, findings=[A, B, C], new_findings=[A]))
    assert back.announced == 1
    assert "fp-a" in rig.posts()[-1]["text"]


async def test_a_resolved_finding_is_not_escalated(rig: Rig) -> None:
    await rig.publish(scripted_run(findings=[A], new_findings=[A]))
    rig.clock.offset = timedelta(hours=2)
    published = await rig.publish(scripted_run(findings=[], resolved_findings=[A]))
    assert (published.escalated, published.resolved) == (0, 1)


async def test_drift_is_announced_once_and_resolved_by_a_full_run(rig: Rig) -> None:
    drifting = {"drift_credits": -3, "drift_tokens": -30_000, "zero_drift": False}
    first = await rig.publish(scripted_run(**drifting))
    second = await rig.publish(scripted_run(**drifting))
    window_clean = await rig.publish(scripted_run())  # a window of intents cannot prove zero drift
    full_clean = await rig.publish(scripted_run(window_start=None))  # incremental: the whole ledger

    assert (first.announced, second.announced) == (1, 0)
    assert (window_clean.resolved, full_clean.resolved) == (0, 1)
    root, reply = rig.posts()
    assert "-3 credits" in root["text"]
    assert reply["thread_ts"] == await rig.pool.fetchval(
        "SELECT ts FROM alert_posts WHERE fingerprint = 'drift'"
    )


async def test_a_failed_post_is_retried_by_the_next_run(rig: Rig) -> None:
    rig.fake.rate_limit_next = 20  # more than the client's retries
    with pytest.raises(SlackApiError):
        await rig.publish(scripted_run(findings=[A], new_findings=[A]))
    assert await rig.pool.fetchval("SELECT count(*) FROM alert_posts") == 0
    rig.fake.rate_limit_next = 0

    retried = await rig.publish(scripted_run(findings=[A]))

    assert retried.announced == 1
    assert len(rig.posts()) == 1


async def test_concurrent_runs_announce_a_finding_once(rig: Rig) -> None:
    run = scripted_run(findings=[A, B, C], new_findings=[A, B, C])
    results = await asyncio.gather(*(rig.publish(run) for _ in range(4)))
    assert sum(r.announced for r in results) == 3
    assert len(rig.posts()) >= 1
    announced = [fp for p in rig.posts() for fp in ("fp-a", "fp-b", "fp-c") if fp in p["text"]]
    assert sorted(announced) == ["fp-a", "fp-b", "fp-c"]


async def test_nothing_is_posted_or_recorded_without_an_alerts_channel(rig: Rig) -> None:
    quiet = replace(
        rig.services,
        settings=rig.services.settings.model_copy(update={"slack_alerts_channel": None}),
    )
    published = await alerts.publish_run(quiet, web_client(quiet), scripted_run(findings=[A]))
    assert published.skipped is not None
    assert rig.posts() == []
    assert await rig.pool.fetchval("SELECT count(*) FROM alert_posts") == 0


# --- the buttons, clicked through the running service ---------------------------------------


@pytest.fixture
async def slack_client(rig: Rig) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(rig.services)
    add_slack(app, rig.services, rpc=None)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def _click(
    client: TestClient[Any, Any], fake: FakeSlack, action_id: str, value: str, user: str, ts: str
) -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": "T1"},
        "api_app_id": "A1",
        "container": {"type": "message", "message_ts": ts, "channel_id": "C_ALERTS"},
        "channel": {"id": "C_ALERTS"},
        "message": {"ts": ts, "text": ""},
        "response_url": f"{fake.url}response/click-{user}",
        "trigger_id": "t",
        "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button"}],
    }
    body = action_body(payload)
    resp = await client.post("/slack/events", data=body, headers=signed_headers(body))
    assert resp.status == 200


async def _announced(rig: Rig) -> str:
    await rig.publish(scripted_run(findings=[A, B], new_findings=[A, B]))
    return str(await rig.pool.fetchval("SELECT ts FROM alert_posts WHERE fingerprint = 'fp-a'"))


async def test_open_ticket_refuses_what_is_no_open_finding(
    rig: Rig, slack_client: TestClient[Any, Any]
) -> None:
    ts = await _announced(rig)  # scripted findings: the engine has no such open finding
    await _click(slack_client, rig.fake, OPEN_TICKET, "fp-a,fp-b", ONCALL, ts)
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{ONCALL}")))
    reply = rig.fake.of(f"response:click-{ONCALL}")[-1]
    assert reply["response_type"] == "ephemeral"
    assert "fingerprint" in reply["text"]
    assert await rig.pool.fetchval("SELECT count(*) FROM recon_tickets") == 0


async def test_open_ticket_failing_unexpectedly_names_the_command(
    rig: Rig, slack_client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(recon_tickets, "open_ticket", broken)
    ts = await _announced(rig)
    await _click(slack_client, rig.fake, OPEN_TICKET, "fp-a,fp-b", ONCALL, ts)
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{ONCALL}")))
    reply = rig.fake.of(f"response:click-{ONCALL}")[-1]
    assert reply["response_type"] == "ephemeral"
    assert "/pay-recon ticket open fp-a fp-b" in reply["text"]


async def test_buttons_are_refused_to_strangers_and_forged_values(
    rig: Rig, slack_client: TestClient[Any, Any]
) -> None:
    ts = await _announced(rig)
    await _click(slack_client, rig.fake, OPEN_TICKET, "fp-a", STRANGER, ts)
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{STRANGER}")))
    assert "not on call" in rig.fake.of(f"response:click-{STRANGER}")[-1]["text"]

    await _click(slack_client, rig.fake, OPEN_TICKET, "fp-a,fp-zzz", ONCALL, ts)
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{ONCALL}")))
    assert "does not belong" in rig.fake.of(f"response:click-{ONCALL}")[-1]["text"]


async def test_run_triage_replies_with_the_triage_report_in_the_thread(
    rig: Rig, slack_client: TestClient[Any, Any]
) -> None:
    ts = await _announced(rig)
    await _click(slack_client, rig.fake, RUN_TRIAGE, "alice", ONCALL, ts)
    await rig.fake.wait_for(lambda: any(p.get("thread_ts") == ts for p in rig.posts()))
    reply = next(p for p in rig.posts() if p.get("thread_ts") == ts)
    assert "Triage of user alice" in reply["text"]
    _blocks(reply)


async def test_open_alerts_are_listed(rig: Rig) -> None:
    await rig.publish(scripted_run(findings=[A, B], new_findings=[A, B]))
    await rig.publish(scripted_run(findings=[B], resolved_findings=[A]))
    assert [p.item.fingerprint for p in await recon.open_posts(rig.pool)] == ["fp-b"]


# --- with the real reconciliation engine, as the scheduler runs it -------------------------


async def test_scheduled_reconcile_announces_a_real_finding_once_then_its_resolution(
    rig: Rig,
) -> None:
    from bot import scheduler
    from core import purchases
    from core import purchases as recovery

    svc = rig.services
    old = replace(svc, clock=lambda: datetime.now(UTC) - timedelta(hours=2))
    async with rig.pool.acquire() as conn:
        intent = await purchases.create_intent(
            old, conn, Actor("erin", "api"), credits=2, wallet=None
        )
    deps = scheduler.JobDeps(svc, None, web_client(svc))

    first = await scheduler.reconcile(deps)
    second = await scheduler.reconcile(deps)

    assert first.facts["full"] is True
    assert second.facts["full"] is False
    assert (first.facts["announced"], second.facts["announced"]) == (1, 0)
    (root,) = rig.posts()
    assert "stale_pending" in root["text"]
    assert _values(root, RUN_TRIAGE)  # the intent's user or the intent itself
    assert svc.metrics.recon_open_findings.labels("stale_pending")._value.get() == 1
    assert svc.metrics.recon_drift.labels("credits")._value.get() == 0

    await recovery.expire(rig.pool, recovery.RECOVERY_ACTOR, intent, datetime.now(UTC))
    third = await scheduler.reconcile(deps)

    assert third.facts["resolution_posts"] == 1
    reply = rig.posts()[-1]
    assert reply["thread_ts"] == await rig.pool.fetchval(
        "SELECT ts FROM alert_posts WHERE kind = 'stale_pending'"
    )
    assert svc.metrics.recon_open_findings.labels("stale_pending")._value.get() == 0

    summary = await scheduler.daily_summary(deps)
    assert summary.facts["posted"] is True
    daily = rig.posts()[-1]
    assert "Payments daily summary" in daily["text"]
    _blocks(daily)


async def test_open_ticket_on_a_real_alert_opens_a_ticket(
    rig: Rig, slack_client: TestClient[Any, Any]
) -> None:
    from bot import scheduler
    from core import purchases

    old = replace(rig.services, clock=lambda: datetime.now(UTC) - timedelta(hours=2))
    async with rig.pool.acquire() as conn:
        await purchases.create_intent(old, conn, Actor("fred", "api"), credits=1, wallet=None)
    await scheduler.reconcile(scheduler.JobDeps(rig.services, None, web_client(rig.services)))
    (root,) = rig.posts()
    ts = await rig.pool.fetchval("SELECT ts FROM alert_posts WHERE kind = 'stale_pending'")
    (fingerprint,) = _values(root, OPEN_TICKET)

    await _click(slack_client, rig.fake, OPEN_TICKET, fingerprint, ONCALL, ts)
    await rig.fake.wait_for(lambda: any(p.get("thread_ts") == ts for p in rig.posts()))

    reply = next(p for p in rig.posts() if p.get("thread_ts") == ts)
    assert "RECON-" in reply["text"]
    assert f"<@{ONCALL}>" in reply["text"]
    ticket = await rig.pool.fetchrow("SELECT opened_by, status FROM recon_tickets")
    assert ticket is not None
    assert (ticket["opened_by"], ticket["status"]) == (ONCALL, "open")
