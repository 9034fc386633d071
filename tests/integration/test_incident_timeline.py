"""Incidents that write themselves: signed Slack requests and events against the app, the
fake Slack API recording what the bot posts, the timeline written from the audit log."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from slack_sdk.models.views import View

from bot.home import refresh_recent
from bot.incident_feed import feed_round
from bot.slack_app import web_client
from core import incidents, purchases
from core.audit import Actor
from tests.integration.test_slack import MANAGER, ONCALL, MovableClock, SlackRig, _thread_ts
from tests.slack_fake import event_body, signed_headers
from tests.slack_rig import slack_app
from tests.support import signature


@contextlib.asynccontextmanager
async def _rig(pool: asyncpg.Pool, **settings: Any) -> AsyncIterator[SlackRig]:
    """The service with its Slack app, against the fake Slack API (as tests/test_slack.py)."""
    clock = MovableClock()
    async with slack_app(
        pool,
        clock=clock,
        slack_alerts_channel="C_ALERTS",
        slack_approvals_channel="C_APPROVALS",
        slack_oncall=ONCALL,
        slack_managers=MANAGER,
        smoke_signature=signature(),
        smoke_reference="9fhexxTKAQG7ZufTy9A5CzR4Aoc47ZkB4NJdKiKAE8fM",
        smoke_amount=10_000,
        **settings,
    ) as app:
        yield SlackRig(app.client, app.fake, app.services, pool, clock)


@pytest.fixture
async def slack(pool: asyncpg.Pool) -> AsyncIterator[SlackRig]:
    async with _rig(pool) as rig:
        yield rig


async def _event(rig: SlackRig, event: dict[str, Any], event_id: str) -> int:
    body = event_body(event, event_id)
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    resp = await rig.client.post("/slack/events", data=body, headers=headers)
    return resp.status


async def _do(rig: SlackRig, command: str, text: str, rid: str, user: str = ONCALL) -> str:
    await rig.command(command, text, user=user, rid=rid)
    return str((await rig.reply(rid))["text"])


def _view(payload: dict[str, Any]) -> dict[str, Any]:
    raw = payload["view"]
    return dict(json.loads(raw) if isinstance(raw, str) else raw)


async def test_the_runbook_writes_the_timeline_in_order_with_actors(slack: SlackRig) -> None:
    rig = slack
    assert "Incident #1" in await _do(rig, "/pay-incident", 'open "duplicate credits"', "o")
    thread = await _thread_ts(rig, "incidents", 1)
    await _do(rig, "/pay-gate", 'close "duplicates on verify"', "g1")
    await _do(rig, "/pay-triage", "alice", "t")
    await _do(rig, "/pay-adjust", 'alice +50 "missing credit after deploy"', "a")
    adj_ts = await _thread_ts(rig, "adjustments", 1)
    await rig.click("adjust_approve", "1", MANAGER, adj_ts)
    await rig.fake.wait_for(
        lambda: any("approved" in p.get("text", "") for p in rig.fake.of("chat.postMessage"))
    )
    await _do(rig, "/pay-recon", "", "r")
    assert "OPEN" in await _do(rig, "/pay-gate", 'open --force "fixed in v42"', "g2")
    await _do(rig, "/pay-incident", "note rolled back to v41", "n")

    await feed_round(rig.services, web_client(rig.services))

    entries = await incidents.entries(rig.pool, 1)
    kinds = [(e.kind, e.actor) for e in entries]
    assert kinds == [
        ("incident", ONCALL),
        ("gate", ONCALL),
        ("triage", ONCALL),
        ("adjustment", ONCALL),  # requested
        ("adjustment", MANAGER),  # approved
        ("adjustment", MANAGER),  # applied
        ("recon", ONCALL),
        ("gate", ONCALL),
        ("incident", ONCALL),  # the note
    ], [(e.kind, e.actor, e.text) for e in entries]
    assert "Verify gate CLOSED — duplicates on verify" in entries[1].text
    assert "APPLIED" in entries[5].text
    assert MANAGER in entries[5].text
    audit_ids = [e.audit_id for e in entries]
    assert audit_ids == sorted(audit_ids)
    # each entry the commands did not post themselves went into the thread, with its record
    posted = [p for p in rig.fake.of("chat.postMessage") if p.get("thread_ts") == thread]
    for entry in entries[1:8]:
        assert any(f"audit #{entry.audit_id}" in p.get("text", "") for p in posted), entry
    # the note was posted by the command, and once only
    assert sum("rolled back to v41" in p.get("text", "") for p in posted) == 1
    # a second round adds nothing
    await feed_round(rig.services, web_client(rig.services))
    assert len(await incidents.entries(rig.pool, 1)) == len(entries)

    # the timeline is part of the audit trail: the database refuses to change it
    for sql in (
        "UPDATE incident_timeline SET text = 'nothing happened'",
        "DELETE FROM incident_timeline",
        "TRUNCATE incident_timeline CASCADE",
    ):
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await rig.pool.execute(sql)


async def test_a_pushpin_adds_a_thread_message_and_the_export_has_every_section(
    slack: SlackRig,
) -> None:
    rig = slack
    await _do(rig, "/pay-incident", 'open "verify failing"', "o")
    thread = await _thread_ts(rig, "incidents", 1)
    await _do(rig, "/pay-incident", "sev 2", "s")
    await _do(rig, "/pay-incident", f"role commander <@{ONCALL}|oncall>", "c")
    said = rig.fake.say("C_ALERTS", "U_WITNESS", "users in EU see 503s since 10:02", thread)
    reaction = {
        "type": "reaction_added",
        "user": ONCALL,
        "reaction": "pushpin",
        "item": {"type": "message", "channel": "C_ALERTS", "ts": said},
        "item_user": "U_WITNESS",
        "event_ts": said,
    }
    assert await _event(rig, reaction, "Ev1") == 200
    await rig.fake.wait_for(lambda: bool(rig.fake.of("conversations.replies")))
    await rig.fake.wait_for(
        lambda: any("added a message" in p.get("text", "") for p in rig.fake.of("chat.postMessage"))
    )
    update = await _do(rig, "/pay-incident", "update 1 gate closed, rolling back", "u")
    assert "failed verifications" in update
    assert "SEV2" in update
    await rig.fake.wait_for(
        lambda: any(
            p.get("reply_broadcast") and p.get("thread_ts") == thread
            for p in rig.fake.of("chat.postMessage")
        )
    )

    await rig.command("/pay-incident", "export 1", rid="e")
    await rig.fake.wait_for(lambda: bool(rig.fake.uploads))
    markdown = next(iter(rig.fake.uploads.values())).decode()
    for section in (
        "## Summary",
        "## Measured impact",
        "## Timeline",
        "## Closeout",
        "## Ledger corrections",
        "## Reconciliation",
    ):
        assert section in markdown, section
    assert "- Severity: SEV2" in markdown
    assert f"- Commander: {ONCALL}" in markdown
    assert "failed verifications:" in markdown
    assert "pending beyond the SLA" in markdown
    assert "📌 U_WITNESS: users in EU see 503s since 10:02" in markdown
    await rig.fake.wait_for(lambda: bool(rig.fake.of("files.completeUploadExternal")))
    complete = rig.fake.of("files.completeUploadExternal")
    assert complete[-1].get("thread_ts") == thread


async def test_two_open_incidents_are_named_by_number(slack: SlackRig) -> None:
    rig = slack
    await _do(rig, "/pay-incident", "open first", "o1")
    await _do(rig, "/pay-incident", "open second", "o2")
    assert "say which one" in await _do(rig, "/pay-incident", "note hello", "n0")
    assert "incident #2" in await _do(rig, "/pay-incident", "note 2 for the second", "n2")
    assert "incident #1" in await _do(rig, "/pay-incident", "note #1 500 users", "n1")
    listed = await _do(rig, "/pay-incident", "list", "l")
    assert "#1" in listed
    assert "#2" in listed
    shown = await _do(rig, "/pay-incident", "show 2", "sh")
    assert "Incident #2: second" in shown
    assert "for the second" in shown
    notes = await incidents.notes(rig.pool, 1)
    assert [n.text for n in notes] == ["500 users"]


async def test_home_shows_pending_approvals_with_buttons_for_managers(slack: SlackRig) -> None:
    rig = slack
    await _do(rig, "/pay-adjust", 'bob +20 "missing credit"', "a")
    adj_ts = await _thread_ts(rig, "adjustments", 1)
    await _do(rig, "/pay-incident", "open payments degraded", "o")
    opened = {"type": "app_home_opened", "user": MANAGER, "channel": "D1", "tab": "home"}
    assert await _event(rig, opened, "Ev2") == 200
    await rig.fake.wait_for(lambda: bool(rig.fake.of("views.publish")))
    publish = rig.fake.of("views.publish")[-1]
    assert publish["user_id"] == MANAGER
    view = _view(publish)
    View(**view).validate_json()
    text = json.dumps(view)
    assert "#1 +20 credits for bob" in text
    assert "payments degraded" in text
    assert "home_adjust_approve" in text

    # the Home button decides through the approval thread's path (and its rules)
    await rig.click("home_adjust_approve", "1", MANAGER, None)
    await rig.fake.wait_for(
        lambda: any(
            p.get("thread_ts") == adj_ts and "approved" in p.get("text", "")
            for p in rig.fake.of("chat.postMessage")
        )
    )
    status = await rig.pool.fetchval("SELECT status FROM adjustments WHERE id = 1")
    assert status == "APPLIED"

    # on-call who are not managers see no buttons
    oncall = {"type": "app_home_opened", "user": ONCALL, "channel": "D2", "tab": "home"}
    await _event(rig, oncall, "Ev3")
    await rig.fake.wait_for(
        lambda: any(p["user_id"] == ONCALL for p in rig.fake.of("views.publish"))
    )
    mine = [p for p in rig.fake.of("views.publish") if p["user_id"] == ONCALL][-1]
    View(**_view(mine)).validate_json()
    assert "home_adjust_approve" not in json.dumps(_view(mine))


async def test_the_home_is_published_again_when_what_it_shows_changes(slack: SlackRig) -> None:
    rig = slack
    opened = {"type": "app_home_opened", "user": MANAGER, "channel": "D1", "tab": "home"}
    assert await _event(rig, opened, "Ev9") == 200
    await rig.fake.wait_for(lambda: len(rig.fake.of("views.publish")) == 1)
    client = web_client(rig.services)

    # Purchases change nothing the Home shows: no view is published again.
    async with rig.pool.acquire() as conn:
        await purchases.create_intent(
            rig.services, conn, Actor("alice", "api"), credits=1, wallet=None
        )
    report = await feed_round(rig.services, client, refresh_recent)
    assert (report.read, report.home_changed) == (1, False)
    assert len(rig.fake.of("views.publish")) == 1

    # A gate switch does: the recent viewer's Home is published again, showing it.
    await _do(rig, "/pay-gate", 'close "duplicates on verify"', "g")
    report = await feed_round(rig.services, client, refresh_recent)
    assert report.home_changed
    publishes = rig.fake.of("views.publish")
    assert [p["user_id"] for p in publishes] == [MANAGER, MANAGER]
    assert "CLOSED" in json.dumps(_view(publishes[-1])).upper()
    assert "CLOSED" not in json.dumps(_view(publishes[0])).upper()


async def test_with_incident_channels_an_incident_gets_its_own_channel(
    pool: asyncpg.Pool,
) -> None:
    async with _rig(pool, incident_channels=True) as rig:
        assert "Incident #1" in await _do(rig, "/pay-incident", 'open "Verify: slow!"', "o")
        await rig.fake.wait_for(
            lambda: any(c.method == "conversations.invite" for c in rig.fake.calls)
        )
        created = [c.payload for c in rig.fake.calls if c.method == "conversations.create"]
        assert [c["name"] for c in created] == ["inc-1-verify-slow"]
        channel = rig.fake.channels["inc-1-verify-slow"]
        invited = [c.payload for c in rig.fake.calls if c.method == "conversations.invite"]
        assert [(i["channel"], i["users"]) for i in invited] == [(channel, ONCALL)]
        await rig.fake.wait_for(lambda: any(m["channel"] == channel for m in rig.fake.messages))
        opened = await incidents.get(pool, 1)
        assert opened is not None
        assert opened.commander == ONCALL  # the opener, named commander
        assert (
            await pool.fetchval(
                "SELECT after->>'channel' FROM audit_log WHERE action = 'incident.channel'"
            )
            == channel
        )


async def test_an_incident_opened_on_the_cli_gets_a_thread_with_its_timeline(
    slack: SlackRig,
) -> None:
    """Slack was down: the incident was opened and noted on the CLI. Once the grace left to
    the Slack command has passed, the feed posts its card to the alerts channel, makes that
    its thread, and posts the timeline into it from the opening on; once only."""
    rig = slack
    svc, client = rig.services, web_client(rig.services)
    operator = Actor("U_CLI_OPS", "cli")
    async with rig.pool.acquire() as conn:
        opened = await incidents.open_incident(conn, operator, "RPC provider down", now=svc.clock())
        await incidents.add_note(conn, operator, "switched to the backup RPC", now=svc.clock())

    def roots() -> list[dict[str, Any]]:
        return [
            p
            for p in rig.fake.of("chat.postMessage")
            if p.get("channel") == "C_ALERTS" and not p.get("thread_ts")
            if "Incident #1: RPC provider down" in p.get("text", "")
        ]

    await feed_round(svc, client)
    assert roots() == []  # within the grace left to `/pay-incident open` in Slack
    current = await incidents.get(rig.pool, opened.id)
    assert current is not None
    assert current.slack_thread_ts is None

    rig.clock.advance(timedelta(seconds=31))
    await feed_round(svc, client)
    [root] = roots()
    assert "opened by U_CLI_OPS" in root["text"]
    current = await incidents.get(rig.pool, opened.id)
    assert current is not None
    assert (current.slack_channel, current.slack_thread_ts) == ("C_ALERTS", str(_ts(rig, root)))
    in_thread = [
        p["text"]
        for p in rig.fake.of("chat.postMessage")
        if p.get("thread_ts") == current.slack_thread_ts
    ]
    entries = await incidents.entries(rig.pool, opened.id)
    assert [e.kind for e in entries] == ["incident", "incident"]
    for entry in entries:
        assert any(f"audit #{entry.audit_id}" in text for text in in_thread), (entry, in_thread)
    assert any("switched to the backup RPC" in text for text in in_thread)

    await feed_round(svc, client)
    assert len(roots()) == 1
    # A thread is only ever given to an incident without one.
    assert not await incidents.adopt_thread(rig.pool, opened.id, "C_OTHER", "1.000001")


async def test_with_incident_channels_an_incident_opened_on_the_cli_gets_its_own_channel(
    pool: asyncpg.Pool,
) -> None:
    """Slack was down: the incident was opened on the CLI. Once the grace left to the Slack
    command has passed, the feed gives it a thread and its own channel, invites the opener
    and the commander (one Slack does not know leaves the other invited), says in the
    channel where the timeline is, and records the channel (audited); once only."""
    async with _rig(pool, incident_channels=True) as rig:
        svc, client = rig.services, web_client(rig.services)
        operator = Actor("U_CLI_OPS", "cli")
        async with pool.acquire() as conn:
            opened = await incidents.open_incident(conn, operator, "RPC down!", now=svc.clock())
            await incidents.set_role(conn, operator, "commander", "U_CMDR", incident_id=opened.id)
        rig.fake.unknown_users.add("U_CLI_OPS")

        await feed_round(svc, client)
        assert rig.fake.of("conversations.create") == []  # the Slack command's, in its grace

        rig.clock.advance(timedelta(seconds=31))
        await feed_round(svc, client)
        assert [c["name"] for c in rig.fake.of("conversations.create")] == ["inc-1-rpc-down"]
        channel = rig.fake.channels["inc-1-rpc-down"]
        invited = [(i["channel"], i["users"]) for i in rig.fake.of("conversations.invite")]
        assert invited == [(channel, "U_CLI_OPS"), (channel, "U_CMDR")]
        [pointer] = [p for p in rig.fake.of("chat.postMessage") if p["channel"] == channel]
        text = "Incident #1: RPC down! — the timeline is in its thread in <#C_ALERTS>"
        assert pointer["text"] == text
        current = await incidents.get(pool, opened.id)
        assert current is not None
        assert current.incident_channel == channel
        assert current.slack_channel == "C_ALERTS"  # the thread was given in the same round
        assert current.commander == "U_CMDR"  # the feed names nobody
        recorded = await pool.fetchrow(
            "SELECT actor, source, after FROM audit_log WHERE action = 'incident.channel'"
        )
        assert (recorded["actor"], recorded["source"]) == ("incident-feed", "scheduler")
        assert recorded["after"] == {"name": "inc-1-rpc-down", "channel": channel}

        await feed_round(svc, client)
        assert len(rig.fake.of("conversations.create")) == 1


async def test_a_channel_slack_refuses_is_not_asked_for_again_and_the_feed_goes_on(
    pool: asyncpg.Pool,
) -> None:
    """The name is taken (a channel from before a database restore, say): the feed warns,
    does not ask for that incident's channel again, and still gives the thread and posts
    the timeline; another incident still gets its channel."""
    async with _rig(pool, incident_channels=True) as rig:
        svc, client = rig.services, web_client(rig.services)
        operator = Actor("U_CLI_OPS", "cli")
        async with pool.acquire() as conn:
            taken = await incidents.open_incident(conn, operator, "taken", now=svc.clock())
            free = await incidents.open_incident(conn, operator, "free", now=svc.clock())
            await incidents.add_note(
                conn, operator, "noted on the CLI", now=svc.clock(), incident_id=taken.id
            )
        rig.fake.channels["inc-1-taken"] = "C_OLD"
        rig.clock.advance(timedelta(seconds=31))
        refused: set[int] = set()

        await feed_round(svc, client, refused=refused)
        await feed_round(svc, client, refused=refused)

        names = [c["name"] for c in rig.fake.of("conversations.create")]
        assert names == ["inc-1-taken", "inc-2-free"]  # the taken name asked for once
        assert refused == {taken.id}
        current = await incidents.get(pool, taken.id)
        assert current is not None
        assert current.incident_channel is None
        assert current.slack_thread_ts is not None
        in_thread = [
            p["text"]
            for p in rig.fake.of("chat.postMessage")
            if p.get("thread_ts") == current.slack_thread_ts
        ]
        assert any("noted on the CLI" in text for text in in_thread), in_thread
        other = await incidents.get(pool, free.id)
        assert other is not None
        assert other.incident_channel == rig.fake.channels["inc-2-free"]


def _ts(rig: SlackRig, posted: dict[str, Any]) -> str:
    """The ts the fake Slack gave a posted message."""
    [message] = [
        m
        for m in rig.fake.messages
        if m["channel"] == posted["channel"] and m["text"] == posted["text"]
    ]
    return str(message["ts"])


async def test_a_refused_card_does_not_stop_the_other_incidents_feed(slack: SlackRig) -> None:
    """The alerts channel refuses the bot (archived, say): the threadless incident is left
    for a later round, and another incident's timeline still reaches its own thread."""
    rig = slack
    svc, client = rig.services, web_client(rig.services)
    operator = Actor("U_CLI_OPS", "cli")
    async with rig.pool.acquire() as conn:
        threadless = await incidents.open_incident(conn, operator, "no card", now=svc.clock())
        threaded = await incidents.open_incident(conn, operator, "has a thread", now=svc.clock())
        await incidents.set_thread(conn, threaded.id, "C_INC", "1700000000.000100")
        await incidents.add_note(
            conn, operator, "still posted", now=svc.clock(), incident_id=threaded.id
        )
    rig.fake.refused["C_ALERTS"] = "is_archived"
    rig.clock.advance(timedelta(seconds=31))

    await feed_round(svc, client)

    current = await incidents.get(rig.pool, threadless.id)
    assert current is not None
    assert current.slack_thread_ts is None  # tried, refused, left for a later round
    assert any(
        p.get("channel") == "C_ALERTS" and "no card" in p.get("text", "")
        for p in rig.fake.of("chat.postMessage")
    )
    in_thread = [
        p["text"]
        for p in rig.fake.of("chat.postMessage")
        if p.get("thread_ts") == "1700000000.000100"
    ]
    assert any("still posted" in text for text in in_thread), in_thread
