"""Slack: signed requests to the running service, replies recorded by a fake Slack API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from slack_sdk.models.blocks import Block

from api.app import create_app
from bot.ops import slash_commands
from bot.slack_app import add_slack
from core import ledger
from core.ledger import LedgerKind, adjustment_postings
from core.logs import JsonFormatter, configure
from core.services import Services
from tests.slack_fake import (
    FakeSlack,
    action_body,
    command_body,
    signed_headers,
)
from tests.slack_rig import slack_app
from tests.support import api_client, bearer, signature

ONCALL, MANAGER, MANAGER2, STRANGER = "U_ONCALL", "U_MGR", "U_MGR2", "U_STRANGER"


@dataclass
class SlackRig:
    client: TestClient[Any, Any]
    fake: FakeSlack
    services: Services
    pool: asyncpg.Pool
    clock: MovableClock

    async def command(self, command: str, text: str, user: str = ONCALL, rid: str = "r") -> int:
        body = command_body(self.fake, command, text, user, rid)
        resp = await self.client.post("/slack/events", data=body, headers=signed_headers(body))
        return resp.status

    async def reply(self, rid: str) -> dict[str, Any]:
        await self.fake.wait_for(
            lambda: any(c.method == f"response:{rid}" for c in self.fake.calls)
        )
        return [c.payload for c in self.fake.calls if c.method == f"response:{rid}"][-1]

    async def click(self, action_id: str, value: str, user: str, message_ts: str | None) -> int:
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "team": {"id": "T1"},
            "api_app_id": "A1",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": "C_APPROVALS"},
            "channel": {"id": "C_APPROVALS"},
            "message": {"ts": message_ts, "text": ""},
            "response_url": f"{self.fake.url}response/click-{user}",
            "trigger_id": "t",
            "actions": [
                {"action_id": action_id, "block_id": "b", "value": value, "type": "button"}
            ],
        }
        body = action_body(payload)
        resp = await self.client.post("/slack/events", data=body, headers=signed_headers(body))
        return resp.status


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


@pytest.fixture
def json_logs() -> Iterator[None]:
    """The service's JSON route logs, as `payops serve` installs them (the smoke checks it)."""
    configure("INFO")
    yield
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]


@pytest.fixture
async def rig(pool: asyncpg.Pool, json_logs: None) -> AsyncIterator[SlackRig]:
    clock = MovableClock()
    async with slack_app(
        pool,
        clock=clock,
        slack_alerts_channel="C_ALERTS",
        slack_approvals_channel="C_APPROVALS",
        slack_oncall=ONCALL,
        slack_managers=f"{MANAGER},{MANAGER2}",
        adjust_two_approvals_above=100,
        smoke_signature=signature(),
        smoke_reference="9fhexxTKAQG7ZufTy9A5CzR4Aoc47ZkB4NJdKiKAE8fM",
        smoke_amount=10_000,
    ) as app:
        yield SlackRig(app.client, app.fake, app.services, pool, clock)


def _valid_blocks(blocks: Any) -> None:
    parsed = Block.parse_all(blocks if isinstance(blocks, list) else json.loads(blocks))
    assert parsed, "no blocks"
    for block in parsed:
        block.validate_json()


@pytest.mark.parametrize("command", list(slash_commands()))
async def test_every_command_answers_help(rig: SlackRig, command: str) -> None:
    assert await rig.command(f"/pay-{command}", "help", user=STRANGER, rid=command) == 200
    reply = await rig.reply(command)
    assert f"/pay-{command}" in reply["text"]


async def test_unsigned_forged_and_stale_requests_are_refused(rig: SlackRig) -> None:
    body = command_body(rig.fake, "/pay-gate", "close outage", ONCALL)
    unsigned = await rig.client.post(
        "/slack/events", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert unsigned.status == 401
    forged = await rig.client.post(
        "/slack/events", data=body, headers=signed_headers(body, secret="x" * 40)
    )
    assert forged.status == 401
    stale = await rig.client.post(
        "/slack/events", data=body, headers=signed_headers(body, timestamp=int(time.time()) - 3600)
    )
    assert stale.status == 401
    tampered = await rig.client.post(
        "/slack/events", data=body.replace("close", "open"), headers=signed_headers(body)
    )
    assert tampered.status == 401
    await asyncio.sleep(0.1)
    assert (
        await rig.pool.fetchval("SELECT is_open FROM gate_switches WHERE name='verify'")
    ) is True
    assert rig.fake.responses() == []


async def test_unauthorized_user_is_refused_privately(rig: SlackRig) -> None:
    assert await rig.command("/pay-gate", "close because", user=STRANGER, rid="s") == 200
    reply = await rig.reply("s")
    assert reply["response_type"] == "ephemeral"
    assert "not on call" in reply["text"]
    assert (
        await rig.pool.fetchval("SELECT is_open FROM gate_switches WHERE name='verify'")
    ) is True


async def test_user_group_membership_grants_oncall(pool: asyncpg.Pool) -> None:
    group = FakeSlack(groups={"S_ONCALL": ["U_IN_GROUP"]})
    async with slack_app(pool, fake=group, slack_oncall="S_ONCALL") as app:
        rig = SlackRig(app.client, app.fake, app.services, pool, MovableClock())
        await rig.command("/pay-gate", "status", user="U_IN_GROUP", rid="in")
        assert "Verify gate" in (await rig.reply("in"))["text"]
        await rig.command("/pay-gate", "status", user="U_OUT", rid="out")
        assert "not on call" in (await rig.reply("out"))["text"]


async def test_gate_close_stops_verifies_and_reopening_needs_a_smoke_test(rig: SlackRig) -> None:
    async with api_client(rig.services) as api:
        created = await api.post(
            "/v1/purchase-intents", json={"credits": 1}, headers=bearer("alice")
        )
        verify_url = f"/v1/purchase-intents/{(await created.json())['id']}/verify"

        await rig.command("/pay-gate", 'close "duplicate credits reported"', rid="close")
        closed = await rig.reply("close")
        assert "CLOSED" in closed["text"]
        _valid_blocks(closed["blocks"])
        await rig.fake.wait_for(lambda: bool(rig.fake.of("chat.postMessage")))
        assert rig.fake.of("chat.postMessage")[-1]["channel"] == "C_ALERTS"
        paused = await api.post(
            verify_url, json={"signature": signature()}, headers=bearer("alice")
        )
        assert paused.status == 503

        await rig.command("/pay-gate", "open", rid="early")
        assert "smoke test" in (await rig.reply("early"))["text"]
        assert (
            await rig.pool.fetchval("SELECT is_open FROM gate_switches WHERE name='verify'")
        ) is False

        await rig.command("/pay-smoke", "", rid="smoke")
        smoke = await rig.reply("smoke")
        assert "PASSED" in smoke["text"], smoke["text"]
        _valid_blocks(smoke["blocks"])

        await rig.command("/pay-gate", "open", rid="open")
        assert "OPEN" in (await rig.reply("open"))["text"]
        resumed = await api.post(
            verify_url, json={"signature": signature()}, headers=bearer("alice")
        )
        assert resumed.status == 200

    actions = [
        r["action"] for r in await rig.pool.fetch("SELECT action FROM audit_log ORDER BY id")
    ]
    assert "gate.verify.close" in actions
    assert "gate.verify.open" in actions
    assert "smoke.run" in actions
    actors = {
        r["actor"]
        for r in await rig.pool.fetch("SELECT actor FROM audit_log WHERE action LIKE 'gate.%'")
    }
    assert actors == {ONCALL}


async def test_gate_force_open_and_retry_switch(rig: SlackRig) -> None:
    await rig.command("/pay-gate", "close outage", rid="c")
    await rig.reply("c")
    await rig.command("/pay-gate", "open --force", rid="noreason")
    assert "reason" in (await rig.reply("noreason"))["text"]
    await rig.command("/pay-gate", 'open --force "rpc vendor confirmed fix"', rid="f")
    assert "OPEN" in (await rig.reply("f"))["text"]
    await rig.command("/pay-gate", "pause-retries rpc flapping", rid="p")
    assert "PAUSED" in (await rig.reply("p"))["text"]
    async with api_client(rig.services) as api:
        status = await (await api.get("/v1/status")).json()
    assert status["retry_verification"] is False
    await rig.command("/pay-gate", "resume-retries", rid="r2")
    assert "RESUMED" in (await rig.reply("r2"))["text"]
    await rig.command("/pay-gate", "status", rid="st")
    text = (await rig.reply("st"))["text"]
    assert "verify: OPEN" in text
    assert "client_retries: OPEN" in text


async def test_smoke_leaves_the_ledger_unchanged(rig: SlackRig) -> None:
    counts = "SELECT (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM purchase_intents), (SELECT count(*) FROM user_balances)"
    before = tuple(await rig.pool.fetchrow(counts))
    await rig.command("/pay-smoke", "", rid="s")
    reply = await rig.reply("s")
    assert "PASSED" in reply["text"], reply["text"]
    assert tuple(await rig.pool.fetchrow(counts)) == before
    assert await rig.pool.fetchval("SELECT passed FROM smoke_runs") is True


async def _adjustment_root(rig: SlackRig, text: str, rid: str) -> tuple[int, str]:
    await rig.command("/pay-adjust", text, rid=rid)
    reply = await rig.reply(rid)
    assert "Adjustment #" in reply["text"], reply["text"]
    adj_id = int(reply["text"].split("#", 1)[1].split(":", 1)[0])
    await rig.fake.wait_for(
        lambda: any(p.get("channel") == "C_APPROVALS" for p in rig.fake.of("chat.postMessage"))
    )
    root = next(p for p in rig.fake.of("chat.postMessage") if p.get("channel") == "C_APPROVALS")
    _valid_blocks(root["blocks"])
    return adj_id, await _thread_ts(rig, "adjustments", adj_id)


async def _thread_ts(rig: SlackRig, table: str, row_id: int) -> str:
    """The thread root the bot recorded (it records it right after posting)."""
    async with asyncio.timeout(10):
        while True:
            ts = await rig.pool.fetchval(
                f"SELECT slack_thread_ts FROM {table} WHERE id = $1", row_id
            )
            if ts:
                return str(ts)
            await asyncio.sleep(0.02)


async def test_adjustment_is_approved_in_the_thread_exactly_once(rig: SlackRig) -> None:
    sig = signature()
    adj_id, ts = await _adjustment_root(
        rig, f'alice +25 "missing credit for paid intent" {sig}', "a"
    )
    # An on-call engineer who is not a manager cannot approve.
    assert await rig.click("adjust_approve", str(adj_id), ONCALL, ts) == 200
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{ONCALL}")))
    assert "manager" in rig.fake.of(f"response:click-{ONCALL}")[-1]["text"]
    # One manager clicks approve twice at once: one application.
    await asyncio.gather(*(rig.click("adjust_approve", str(adj_id), MANAGER, ts) for _ in range(2)))
    await rig.fake.wait_for(lambda: bool(rig.fake.of("chat.update")))
    assert await ledger.balance(rig.pool, "alice") == 25
    assert (
        await rig.pool.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind='adjustment'")
        == 1
    )
    assert (
        await rig.pool.fetchval("SELECT status FROM adjustments WHERE id=$1", adj_id) == "APPLIED"
    )
    thread = [p for p in rig.fake.of("chat.postMessage") if p.get("thread_ts") == ts]
    assert any("APPLIED" in p["text"].upper() or "apply" in p["text"].lower() for p in thread)
    update = rig.fake.of("chat.update")[-1]
    _valid_blocks(update["blocks"])
    note = await rig.pool.fetchrow(
        "SELECT actor, after FROM audit_log WHERE action = 'adjustment.apply'"
    )
    assert note is not None
    assert note["actor"] == MANAGER


async def test_self_approval_is_refused_even_for_a_manager(rig: SlackRig) -> None:
    await rig.command("/pay-adjust", 'bob +5 "goodwill"', user=MANAGER, rid="b")
    await rig.reply("b")
    await rig.fake.wait_for(lambda: bool(rig.fake.of("chat.postMessage")))
    adj_id = int(await rig.pool.fetchval("SELECT max(id) FROM adjustments"))
    ts = await _thread_ts(rig, "adjustments", adj_id)
    await rig.click("adjust_approve", str(adj_id), MANAGER, ts)
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{MANAGER}")))
    assert "requester" in rig.fake.of(f"response:click-{MANAGER}")[-1]["text"]
    assert await ledger.balance(rig.pool, "bob") == 0
    assert (
        await rig.pool.fetchval("SELECT status FROM adjustments WHERE id=$1", adj_id)
        == "PENDING_APPROVAL"
    )


async def test_large_adjustment_needs_two_managers(rig: SlackRig) -> None:
    adj_id, ts = await _adjustment_root(rig, 'carol +500 "bulk fix"', "c")
    await rig.click("adjust_approve", str(adj_id), MANAGER, ts)
    await rig.fake.wait_for(
        lambda: len([p for p in rig.fake.of("chat.postMessage") if p.get("thread_ts") == ts]) >= 1
    )
    assert await ledger.balance(rig.pool, "carol") == 0
    await rig.click("adjust_approve", str(adj_id), MANAGER2, ts)
    await rig.fake.wait_for(
        lambda: len([p for p in rig.fake.of("chat.postMessage") if p.get("thread_ts") == ts]) >= 2
    )
    assert await ledger.balance(rig.pool, "carol") == 500


async def test_expired_request_cannot_be_approved(rig: SlackRig) -> None:
    adj_id, ts = await _adjustment_root(rig, 'dave +5 "late"', "d")
    rig.clock.advance(timedelta(days=2))
    await rig.click("adjust_approve", str(adj_id), MANAGER, ts)
    await rig.fake.wait_for(
        lambda: any(c.method == f"response:click-{MANAGER}" for c in rig.fake.calls)
    )
    assert "expire" in rig.fake.of(f"response:click-{MANAGER}")[-1]["text"].lower()
    assert await ledger.balance(rig.pool, "dave") == 0
    assert (
        await rig.pool.fetchval("SELECT status FROM adjustments WHERE id=$1", adj_id) == "EXPIRED"
    )


async def test_button_value_pointing_at_another_adjustment_is_refused(rig: SlackRig) -> None:
    first, ts_first = await _adjustment_root(rig, 'erin +5 "one"', "e1")
    await rig.command("/pay-adjust", 'frank +7 "two"', rid="e2")
    await rig.reply("e2")
    second = int(await rig.pool.fetchval("SELECT max(id) FROM adjustments"))
    assert second != first
    await rig.click("adjust_approve", str(second), MANAGER, ts_first)
    await rig.fake.wait_for(
        lambda: any(c.method == f"response:click-{MANAGER}" for c in rig.fake.calls)
    )
    assert await ledger.balance(rig.pool, "frank") == 0


async def test_reverse_a_duplicate_credit(rig: SlackRig) -> None:
    async with rig.pool.acquire() as conn, conn.transaction():
        tx = await ledger.post(
            conn,
            kind=LedgerKind.ADJUSTMENT,
            postings=adjustment_postings("gina", 9),
            created_by="t",
        )
    await rig.command("/pay-adjust", f'reverse {tx} "duplicate credit"', rid="rv")
    reply = await rig.reply("rv")
    assert "-9" in reply["text"], reply["text"]


async def test_triage_and_recon_commands(rig: SlackRig) -> None:
    async with api_client(rig.services) as api:
        created = await api.post(
            "/v1/purchase-intents", json={"credits": 3}, headers=bearer("henry")
        )
        intent = await created.json()
        await api.post(
            f"/v1/purchase-intents/{intent['id']}/verify",
            json={"signature": signature()},
            headers=bearer("henry"),
        )
    await rig.command("/pay-triage", "henry", rid="t1")
    t1 = await rig.reply("t1")
    assert "healthy" in t1["text"]
    _valid_blocks(t1["blocks"])
    await rig.command("/pay-triage", intent["id"], rid="t2")
    assert intent["id"] in (await rig.reply("t2"))["text"]
    await rig.command("/pay-triage", "last 2h", rid="t3")
    assert "attempts" in (await rig.reply("t3"))["text"]
    await rig.command("/pay-recon", "", rid="rc")
    recon = await rig.reply("rc")
    assert "ZERO DRIFT" in recon["text"], recon["text"]
    _valid_blocks(recon["blocks"])


async def test_incident_open_note_and_close_with_the_modal(rig: SlackRig) -> None:
    await rig.command("/pay-incident", 'open "missing credits after deploy"', rid="io")
    assert "Incident #" in (await rig.reply("io"))["text"]
    await rig.fake.wait_for(
        lambda: any(p.get("channel") == "C_ALERTS" for p in rig.fake.of("chat.postMessage"))
    )
    ts = await _thread_ts(
        rig, "incidents", int(await rig.pool.fetchval("SELECT id FROM incidents"))
    )
    await rig.command("/pay-incident", "note rolled back to v41", rid="in")
    await rig.reply("in")
    await rig.fake.wait_for(
        lambda: any(p.get("thread_ts") == ts for p in rig.fake.of("chat.postMessage"))
    )
    await rig.command("/pay-incident", "close", rid="ic")
    await rig.fake.wait_for(lambda: bool(rig.fake.of("views.open")))
    view = (
        json.loads(rig.fake.of("views.open")[-1]["view"])
        if isinstance(rig.fake.of("views.open")[-1]["view"], str)
        else rig.fake.of("views.open")[-1]["view"]
    )
    assert view["callback_id"] == "incident_closeout"
    values = {
        key: {"value": {"type": "plain_text_input", "value": f"{key} text"}}
        for key in ("root_cause", "affected_users", "corrective_action", "prevention_action")
    }
    submission = {
        "type": "view_submission",
        "user": {"id": ONCALL},
        "team": {"id": "T1"},
        "api_app_id": "A1",
        "view": {**view, "id": "V1", "state": {"values": values}},
    }
    body = action_body(submission)
    resp = await rig.client.post("/slack/events", data=body, headers=signed_headers(body))
    assert resp.status == 200
    row = await rig.pool.fetchrow("SELECT status, root_cause, prevention_action FROM incidents")
    assert dict(row) == {
        "status": "closed",
        "root_cause": "root_cause text",
        "prevention_action": "prevention_action text",
    }


async def test_web_api_rate_limit_is_retried(rig: SlackRig) -> None:
    rig.fake.rate_limit_next = 1
    await rig.command("/pay-gate", "close rate limited", rid="rl")
    await rig.reply("rl")
    await rig.fake.wait_for(lambda: bool(rig.fake.of("chat.postMessage")))
    limited = [c.method.removesuffix(":429") for c in rig.fake.calls if c.method.endswith(":429")]
    assert len(limited) == 1
    # The same call went through on the retry.
    assert rig.fake.of(limited[0])


async def test_socket_mode_connects_at_start_and_runs_commands(pool: asyncpg.Pool) -> None:
    async with slack_app(pool, slack_app_token="xapp-test-token", slack_oncall=ONCALL) as app:
        fake = app.fake
        await fake.wait_for(lambda: bool(fake.sockets))
        payload = {
            "command": "/pay-gate",
            "text": "status",
            "user_id": ONCALL,
            "team_id": "T1",
            "channel_id": "C_OPS",
            "response_url": f"{fake.url}response/socket",
            "trigger_id": "t",
            "api_app_id": "A1",
        }
        await fake.sockets[0].send_json(
            {
                "envelope_id": "env-1",
                "type": "slash_commands",
                "payload": payload,
                "accepts_response_payload": True,
            }
        )
        await fake.wait_for(
            lambda: bool(fake.of("socket:ack")) and bool(fake.of("response:socket"))
        )
        assert fake.of("socket:ack")[0]["envelope_id"] == "env-1"
        assert "Verify gate" in fake.of("response:socket")[-1]["text"]
        assert fake.of("apps.connections.open")


async def _adjustment_count(pool: asyncpg.Pool) -> int:
    await asyncio.sleep(0.2)  # a command acks at once and runs afterwards
    return int(await pool.fetchval("SELECT count(*) FROM adjustments"))


async def test_signed_request_sent_twice_runs_once(rig: SlackRig) -> None:
    body = command_body(rig.fake, "/pay-adjust", 'alice +5 "missing credit"', ONCALL, "twice")
    headers = signed_headers(body)
    first = await rig.client.post("/slack/events", data=body, headers=headers)
    assert first.status == 200
    await rig.reply("twice")
    again = await rig.client.post("/slack/events", data=body, headers=headers)
    assert again.status == 401
    assert "already received" in await again.text()
    assert await _adjustment_count(rig.pool) == 1


async def test_slack_retry_is_acknowledged_without_running(rig: SlackRig) -> None:
    body = command_body(rig.fake, "/pay-adjust", 'alice +5 "missing credit"', ONCALL, "retry")
    first = await rig.client.post("/slack/events", data=body, headers=signed_headers(body))
    assert first.status == 200
    retry = await rig.client.post(
        "/slack/events",
        data=body,
        headers={**signed_headers(body, timestamp=int(time.time()) + 1), "X-Slack-Retry-Num": "1"},
    )
    assert retry.status == 200
    assert retry.headers["X-Slack-No-Retry"] == "1"
    await rig.reply("retry")
    assert await _adjustment_count(rig.pool) == 1
    assert len(rig.fake.of("response:retry")) == 1


async def test_replay_through_another_replica_is_refused(rig: SlackRig) -> None:
    other_app = create_app(rig.services)
    add_slack(other_app, rig.services, rpc=None)
    other: TestClient[Any, Any] = TestClient(TestServer(other_app))
    await other.start_server()
    try:
        body = command_body(rig.fake, "/pay-adjust", 'bob +3 "missing credit"', ONCALL, "two")
        headers = signed_headers(body)
        statuses = await asyncio.gather(
            rig.client.post("/slack/events", data=body, headers=headers),
            other.post("/slack/events", data=body, headers=headers),
        )
        assert sorted(r.status for r in statuses) == [200, 401]
    finally:
        await other.close()
    assert await _adjustment_count(rig.pool) == 1


async def test_expired_signatures_are_pruned(rig: SlackRig) -> None:
    await rig.pool.execute(
        """INSERT INTO slack_requests_seen (signature, expires_at)
           VALUES ('v0=old', now() - interval '1 hour'), ('v0=fresh', now() + interval '1 hour')"""
    )
    assert await rig.command("/pay-gate", "help", rid="prune") == 200
    left = await rig.pool.fetch("SELECT signature FROM slack_requests_seen ORDER BY signature")
    assert "v0=old" not in {r["signature"] for r in left}
    assert "v0=fresh" in {r["signature"] for r in left}


ARABIC_INDIC_13 = "\u0661\u0663"


@pytest.mark.parametrize("value", ["13²", ARABIC_INDIC_13, "0", "-1", "1" * 30, "", " 1"])
async def test_malformed_button_value_is_refused(rig: SlackRig, value: str) -> None:
    adj_id, ts = await _adjustment_root(rig, 'hana +5 "missing credit"', "h")
    assert await rig.click("adjust_approve", value, MANAGER, ts) == 200
    await rig.fake.wait_for(lambda: bool(rig.fake.of(f"response:click-{MANAGER}")))
    assert "does not name an adjustment" in rig.fake.of(f"response:click-{MANAGER}")[-1]["text"]
    assert (
        await rig.pool.fetchval("SELECT status FROM adjustments WHERE id=$1", adj_id)
        == "PENDING_APPROVAL"
    )


@pytest.mark.parametrize(
    "text", ["approve 13²", f"reject {ARABIC_INDIC_13}", "show 1²", "reverse ²  why"]
)
async def test_typed_id_in_other_digits_is_refused(rig: SlackRig, text: str) -> None:
    assert await rig.command("/pay-adjust", text, user=MANAGER, rid="u") == 200
    assert "usage: /pay-adjust" in (await rig.reply("u"))["text"]


async def test_typed_approval_is_posted_into_the_request_thread(rig: SlackRig) -> None:
    adj_id, ts = await _adjustment_root(rig, 'ivan +4 "missing credit"', "i")
    assert await rig.command("/pay-adjust", f"approve {adj_id}", user=MANAGER, rid="typed") == 200
    await rig.reply("typed")
    await rig.fake.wait_for(lambda: bool(rig.fake.of("chat.update")))
    thread = [p for p in rig.fake.of("chat.postMessage") if p.get("thread_ts") == ts]
    assert [p["text"] for p in thread] == [
        f"<@{MANAGER}> approved adjustment #{adj_id} with `/pay-adjust` → APPLIED"
    ]
    update = rig.fake.of("chat.update")[-1]
    assert update["ts"] == ts
    assert "APPLIED" in update["text"]
    _valid_blocks(update["blocks"])
    assert await ledger.balance(rig.pool, "ivan") == 4
