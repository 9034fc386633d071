"""`payops ops webhooks` and `/pay-webhooks`: list what was given up, retry one event, replay
since a time — audited, on call only, and bad input changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from slack_sdk.models.blocks import Block

from core import webhooks
from core.config import Settings
from payops.cli_args import parser as _parser
from payops.ops_cli import run_ops
from tests.slack_fake import FakeSlack, command_body, signed_headers
from tests.slack_rig import slack_app
from tests.support import make_settings

pytestmark = pytest.mark.timeout(60)
ONCALL, STRANGER = "U_ONCALL", "U_STRANGER"
ENDPOINT = "http://127.0.0.1:9/hooks"


def _settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        slack_oncall=ONCALL,
        solana_rpc_url="http://127.0.0.1:9",  # the CLI must work while the RPC is down
    )


async def _event(
    conn: asyncpg.Connection, user: str, status: str, hours_ago: float = 0
) -> uuid.UUID:
    """An event to ENDPOINT whose delivery ended in `status`, written `hours_ago`."""
    async with conn.transaction():
        event_id = await webhooks.enqueue(
            conn, "credits.debited", f"user:{user}", {"user_id": user, "credits": 2}
        )
        await conn.execute(
            "UPDATE webhook_events SET created_at = now() - make_interval(secs => $2) "
            "WHERE id = $1",
            event_id,
            hours_ago * 3600,
        )
        if status == "dead":
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'dead', attempts = 17, "
                "last_error = 'HTTP 503' WHERE event_id = $1",
                event_id,
            )
        elif status == "delivered":
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = 1, "
                "delivered_at = now() WHERE event_id = $1",
                event_id,
            )
    return event_id


@dataclass
class Outbox:
    conn: asyncpg.Connection
    dead: uuid.UUID
    delivered: uuid.UUID
    old: uuid.UUID

    async def status(self, event_id: uuid.UUID) -> str:
        return str(
            await self.conn.fetchval(
                "SELECT status FROM webhook_deliveries WHERE event_id = $1", event_id
            )
        )

    async def state(self) -> list[Any]:
        """Everything a refused command must leave as it was."""
        rows = await self.conn.fetch(
            "SELECT event_id, status, attempts, next_attempt_at FROM webhook_deliveries "
            "ORDER BY event_id"
        )
        audits = await self.conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'webhook.%'"
        )
        return [*map(tuple, rows), audits]

    async def audits(self, action: str) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                "SELECT actor, source, subject, before, after FROM audit_log WHERE action = $1",
                action,
            )
        )


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    conn = await asyncpg.connect(database_url)
    try:
        await webhooks.sync_endpoints(conn, [ENDPOINT])
        box = Outbox(
            conn,
            dead=await _event(conn, "dora", "dead", hours_ago=0.5),
            delivered=await _event(conn, "dave", "delivered", hours_ago=0.2),
            old=await _event(conn, "olga", "delivered", hours_ago=3),
        )
        yield box
    finally:
        await conn.close()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# --- the CLI ------------------------------------------------------------------------------


async def test_list_dead_shows_the_given_up_delivery(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_ops(_settings(database_url), ONCALL, "webhooks", ["list", "--dead"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if str(outbox.dead) in x)
    for part in ("credits.debited", "user:dora", ENDPOINT, "dead", "attempts=17", "HTTP 503"):
        assert part in line
    assert str(outbox.delivered) not in out
    assert "1 dead, 0 pending, 2 delivered" in out


async def test_list_since_leaves_out_older_events_newest_first(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        await run_ops(_settings(database_url), ONCALL, "webhooks", ["list", "--since", "1h"]) == 0
    )
    out = capsys.readouterr().out
    assert str(outbox.old) not in out
    assert out.index(str(outbox.delivered)) < out.index(str(outbox.dead))


async def test_show_prints_the_event_as_receivers_get_it(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        await run_ops(_settings(database_url), ONCALL, "webhooks", ["show", str(outbox.dead)]) == 0
    )
    out = capsys.readouterr().out
    assert f'"id": "{outbox.dead}"' in out
    assert '"user_id": "dora"' in out
    assert f"→ {ENDPOINT} dead attempts=17" in out


async def test_retry_makes_a_dead_delivery_pending_and_is_audited(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        await run_ops(_settings(database_url), ONCALL, "webhooks", ["retry", str(outbox.dead)]) == 0
    )
    assert "delivered again now to 1 endpoint" in capsys.readouterr().out
    assert await outbox.status(outbox.dead) == "pending"
    assert await outbox.status(outbox.delivered) == "delivered"
    (row,) = await outbox.audits("webhook.retry")
    assert (row["actor"], row["source"]) == (ONCALL, "cli")
    assert row["subject"] == f"webhook:{outbox.dead}"
    assert _json(row["before"]) == {"deliveries": {ENDPOINT: "dead"}}
    assert _json(row["after"])["count"] == 1


async def test_replay_counts_the_events_since_and_is_audited(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(database_url)
    assert await run_ops(settings, ONCALL, "webhooks", ["replay", "--since", "1h"]) == 0
    assert "2 deliveries will be sent again" in capsys.readouterr().out
    assert await outbox.status(outbox.dead) == "pending"
    assert await outbox.status(outbox.delivered) == "pending"
    assert await outbox.status(outbox.old) == "delivered"
    (row,) = await outbox.audits("webhook.replay")
    assert (row["actor"], row["source"]) == (ONCALL, "cli")
    assert _json(row["after"])["count"] == 2


async def test_a_stranger_is_refused_and_nothing_changes(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    before = await outbox.state()
    settings = _settings(database_url)
    assert await run_ops(settings, STRANGER, "webhooks", ["retry", str(outbox.dead)]) == 1
    assert await run_ops(settings, STRANGER, "webhooks", ["replay", "--since", "1h"]) == 1
    assert "not on call" in capsys.readouterr().err
    assert await outbox.state() == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["retry", "not-an-id"], "not an event id"),
        (["retry", str(uuid.UUID(int=7))], "no webhook event"),
        (["retry"], "use `/pay-webhooks list"),
        (["show", "12345"], "not an event id"),
        (["replay"], "replay --since <time>"),
        (["replay", "2h"], "replay --since <time>"),
        (["replay", "--since", "yesterday"], "cannot read the time 'yesterday'"),
        (["replay", "--since", "2999-01-01T00:00Z"], "in the future"),
        (["replay", "--since", "45d"], "more than 30 days back"),
        (["replay", "--since", "2020-01-01T00:00Z"], "more than 30 days back"),
        (["list", "--bogus"], "cannot read '--bogus'"),
        (["list", "--since"], "cannot read '--since'"),
        (["list", "--dead", "--dead"], "cannot read '--dead'"),
        (["frobnicate"], "use `/pay-webhooks list"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    database_url: str,
    outbox: Outbox,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    before = await outbox.state()
    assert await run_ops(_settings(database_url), ONCALL, "webhooks", args) == 1
    assert says in capsys.readouterr().err
    assert await outbox.state() == before


async def test_an_event_without_deliveries_is_refused(
    database_url: str, outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    await webhooks.sync_endpoints(outbox.conn, [])
    orphan = await webhooks.enqueue(outbox.conn, "recon.drift", "recon", {"run_id": 1})
    before = await outbox.state()
    assert await run_ops(_settings(database_url), ONCALL, "webhooks", ["retry", str(orphan)]) == 1
    assert "no deliveries" in capsys.readouterr().err
    assert await outbox.state() == before


def test_the_cli_passes_the_flags_to_the_command() -> None:
    args = _parser().parse_args(
        ["ops", "--as", ONCALL, "webhooks", "list", "--dead", "--since", "2h"]
    )
    assert (args.ops_command, args.ops_args) == ("webhooks", ["list", "--dead", "--since", "2h"])


# --- Slack --------------------------------------------------------------------------------


@dataclass
class Slack:
    client: TestClient[Any, Any]
    fake: FakeSlack

    async def command(self, text: str, user: str, rid: str) -> dict[str, Any]:
        body = command_body(self.fake, "/pay-webhooks", text, user, rid)
        resp = await self.client.post("/slack/events", data=body, headers=signed_headers(body))
        assert resp.status == 200
        await self.fake.wait_for(
            lambda: any(c.method == f"response:{rid}" for c in self.fake.calls)
        )
        return [c.payload for c in self.fake.calls if c.method == f"response:{rid}"][-1]


@pytest.fixture
async def slack(pool: asyncpg.Pool) -> AsyncIterator[Slack]:
    async with slack_app(pool, slack_alerts_channel="C_ALERTS", slack_oncall=ONCALL) as app:
        yield Slack(app.client, app.fake)


async def test_slack_lists_dead_deliveries_in_valid_blocks(slack: Slack, outbox: Outbox) -> None:
    reply = await slack.command("list --dead", ONCALL, "list")
    assert str(outbox.dead) in reply["text"]
    blocks = reply["blocks"]
    parsed = Block.parse_all(blocks if isinstance(blocks, list) else json.loads(blocks))
    assert parsed
    for block in parsed:
        block.validate_json()


async def test_slack_retry_is_audited_and_announced(slack: Slack, outbox: Outbox) -> None:
    reply = await slack.command(f"retry {outbox.dead}", ONCALL, "retry")
    assert "delivered again now" in reply["text"]
    assert await outbox.status(outbox.dead) == "pending"
    (row,) = await outbox.audits("webhook.retry")
    assert (row["actor"], row["source"]) == (ONCALL, "slack")
    await slack.fake.wait_for(
        lambda: any(
            c.method == "chat.postMessage" and c.payload.get("channel") == "C_ALERTS"
            for c in slack.fake.calls
        )
    )


async def test_slack_replay_counts(slack: Slack, outbox: Outbox) -> None:
    reply = await slack.command("replay --since 1h", ONCALL, "replay")
    assert "2 deliveries will be sent again" in reply["text"]
    assert len(await outbox.audits("webhook.replay")) == 1


async def test_slack_refuses_a_stranger_and_bad_input(slack: Slack, outbox: Outbox) -> None:
    before = await outbox.state()
    refused = await slack.command(f"retry {outbox.dead}", STRANGER, "stranger")
    assert refused["response_type"] == "ephemeral"
    assert "not on call" in refused["text"]
    bad = await slack.command("replay --since last-tuesday", ONCALL, "bad")
    assert "cannot read the time" in bad["text"]
    assert await outbox.state() == before
