"""The command registry (bot/ops.py) is the one list Slack, the CLI and manifest.yml follow.

Registration is checked on the running Bolt app with signed requests: Bolt answers 404 to a
command, button or form it has no handler for, 200 once a handler acknowledged it.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestClient

from bot import ops
from bot.ops import COMMANDS, Command, slash_commands
from bot.slack_app import create_bolt_app
from bot.slack_ui import Click, SlackEnv, SlackUI
from core.errors import ConfigError
from core.services import Services
from payops.cli_args import parser as _parser
from tests.slack_fake import (
    FakeSlack,
    action_body,
    command_body,
    signed_headers,
)
from tests.slack_rig import slack_app

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"
STRANGER = "U_STRANGER"  # not on call: every handler refuses, so nothing changes


@dataclass
class Bot:
    client: TestClient[Any, Any]
    fake: FakeSlack
    services: Services

    async def post(self, body: str) -> int:
        resp = await self.client.post("/slack/events", data=body, headers=signed_headers(body))
        return resp.status

    async def command(self, name: str, rid: str) -> int:
        return await self.post(command_body(self.fake, f"/pay-{name}", "help", STRANGER, rid))

    async def click(self, action_id: str, rid: str) -> int:
        return await self.post(
            action_body(
                {
                    "type": "block_actions",
                    "user": {"id": STRANGER},
                    "team": {"id": "T1"},
                    "api_app_id": "A1",
                    "channel": {"id": "C_ALERTS"},
                    "message": {"ts": "1.1", "text": ""},
                    "response_url": f"{self.fake.url}response/{rid}",
                    "trigger_id": "t",
                    "actions": [
                        {"action_id": action_id, "block_id": "b", "value": "x", "type": "button"}
                    ],
                }
            )
        )

    async def submit(self, callback_id: str) -> int:
        return await self.post(
            action_body(
                {
                    "type": "view_submission",
                    "user": {"id": STRANGER},
                    "team": {"id": "T1"},
                    "api_app_id": "A1",
                    "view": {
                        "type": "modal",
                        "id": "V1",
                        "callback_id": callback_id,
                        "state": {"values": {}},
                    },
                }
            )
        )

    async def answered(self, rid: str) -> None:
        await self.fake.wait_for(lambda: bool(self.fake.of(f"response:{rid}")))


@pytest.fixture
async def bot(pool: asyncpg.Pool) -> AsyncIterator[Bot]:
    async with slack_app(pool, slack_alerts_channel="C_ALERTS", slack_oncall="U_ONCALL") as app:
        yield Bot(app.client, app.fake, app.services)


def _declared(kind: str) -> list[str]:
    return [key for ui in slash_commands().values() for key in getattr(ui, kind)]


def test_manifest_lists_exactly_the_registrys_slash_commands() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    listed = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert sorted(listed) == sorted(f"/pay-{name}" for name in slash_commands())


def test_cli_offers_exactly_the_registrys_commands() -> None:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    ops_parser = sub.choices["ops"]
    choice = next(a for a in ops_parser._actions if a.dest == "ops_command")
    assert list(choice.choices or []) == list(COMMANDS)


async def test_slack_registers_exactly_the_registrys_slash_commands(bot: Bot) -> None:
    for name in slash_commands():
        assert await bot.command(name, rid=name) == 200, name
        await bot.answered(name)
    cli_only = [name for name, c in COMMANDS.items() if c.slack is None]
    assert cli_only == ["rollback-check"]
    for name in [*cli_only, "not-a-command"]:
        assert await bot.command(name, rid=name) == 404, name


async def test_every_declared_button_is_registered(bot: Bot) -> None:
    action_ids = _declared("actions")
    assert {"adjust_approve", "adjust_reject", "recon_open_ticket", "recon_triage"} <= set(
        action_ids
    )
    for action_id in action_ids:
        assert await bot.click(action_id, rid=action_id) == 200, action_id
        await bot.answered(action_id)  # refused: the clicker is no one on call
    assert await bot.click("not_a_button", rid="nb") == 404


async def test_every_declared_form_is_registered(bot: Bot) -> None:
    callback_ids = _declared("views")
    assert "incident_closeout" in callback_ids
    for callback_id in callback_ids:
        assert await bot.submit(callback_id) == 200, callback_id
    assert await bot.submit("not_a_form") == 404
    assert await bot.services.pool.fetchval("SELECT count(*) FROM incidents") == 0


async def test_an_id_declared_by_two_commands_is_refused(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def clash(env: SlackEnv, click: Click) -> None:
        raise AssertionError("never registered")

    ui = SlackUI(actions={"adjust_approve": clash})
    monkeypatch.setitem(ops.COMMANDS, "clash", Command("clash", COMMANDS["gate"].run, "", ui))
    with pytest.raises(ConfigError, match="adjust_approve"):
        create_bolt_app(bot.services, None)


def test_manifest_subscribes_to_exactly_the_declared_events_with_their_scopes() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert sorted(events) == sorted(_declared("events"))
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # what the bot calls: commands, chat.postMessage (public channels too), usergroups.users
    # .list, files.uploadV2, reaction_added + conversations.replies/history, and
    # conversations.create/invite (PAYOPS_INCIDENT_CHANNELS)
    assert scopes == {
        "commands",
        "chat:write",
        "chat:write.public",
        "usergroups:read",
        "files:write",
        "reactions:read",
        "channels:history",
        "groups:history",
        "channels:manage",
    }
    assert "users:read" not in scopes  # never called


def test_manifest_usage_hints_name_what_the_commands_accept() -> None:
    from bot.commands import incident

    manifest = yaml.safe_load(MANIFEST.read_text())
    hints = {c["command"]: c["usage_hint"] for c in manifest["features"]["slash_commands"]}
    for action in incident.ACTIONS:
        assert action in hints["/pay-incident"], action
    assert "[n]" in hints["/pay-incident"]
    assert "rollback-check" in hints["/pay-gate"]
    for word in ("quick", "latest", "findings", "ticket open", "ticket list"):
        assert word in hints["/pay-recon"], word
    for name, hint in hints.items():
        assert len(hint) <= 1000, name
