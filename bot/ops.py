"""The runbook's commands, independent of where they are typed: the one list of them.

`run(ctx, command, text)` is what Slack's `/pay-<command> <text>` and the CLI's
`payops ops <command> <text>` both call; it returns a `Reply` (text + blocks). Authorization
is decided before (bot/authz.py); every state change inside is audited with `ctx.actor`.

`COMMANDS` is what Slack registers (bot/slack_app.py: each slash command with its buttons and
forms), what the CLI offers (payops/cli.py's `ops` choices) and what manifest.yml must list.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from bot import home
from bot.authz import Roles
from bot.commands import adjust, gate, incident, recon, rollback, smoke, triage, webhooks
from bot.context import OpsContext
from bot.replies import Reply
from bot.slack_ui import SlackUI
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.errors import InvalidInput
from core.services import Services

log = logging.getLogger("payops.bot")

Handler = Callable[[OpsContext, list[str]], Awaitable[Reply]]


@dataclass(frozen=True)
class Command:
    name: str
    run: Handler
    help: str
    # Its Slack UI, registered as `/pay-<name>`; None for a command only the CLI offers.
    slack: SlackUI | None


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("triage", triage.run, triage.HELP, triage.SLACK),
        Command("gate", gate.run, gate.HELP, gate.SLACK),
        Command("smoke", smoke.run, smoke.HELP, smoke.SLACK),
        Command("adjust", adjust.run, adjust.HELP, adjust.SLACK),
        Command("recon", recon.run, recon.HELP, recon.SLACK),
        Command("incident", incident.run, incident.HELP, incident.SLACK),
        Command("webhooks", webhooks.run, webhooks.HELP, webhooks.SLACK),
        Command("home", home.run, home.HELP, home.SLACK),
        # `payops ops rollback-check` is `/pay-gate rollback-check` (the gate's sub-command).
        Command("rollback-check", rollback.run, rollback.HELP, None),
    )
}


def slash_commands() -> dict[str, SlackUI]:
    """The commands Slack offers as `/pay-<name>`, with their UI."""
    return {c.name: c.slack for c in COMMANDS.values() if c.slack is not None}


def split_args(text: str) -> list[str]:
    """Shell-like words, so reasons can be quoted; a stray quote is a clear error."""
    try:
        return shlex.split(text.strip())
    except ValueError as exc:
        raise InvalidInput(f"cannot read the arguments: {exc}", code="invalid_arguments") from exc


async def run(ctx: OpsContext, command: str, text: str) -> Reply:
    """Run one command; `help` (or no known command) answers its usage."""
    if command not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        raise InvalidInput(f"unknown command {command!r}; known: {known}", code="unknown_command")
    found = COMMANDS[command]
    args = split_args(text)
    if args[:1] == ["help"]:
        return Reply(text=found.help)
    return await found.run(ctx, args)


# --- the operator API's runner (POST /v1/ops/{command}, wired by payops/compose.py) ---------


@dataclass(frozen=True)
class OperatorRunner:
    """The commands for operators whose token the API verified: roles from the service's
    settings (user groups read through Slack when it is configured), and what a command posts
    to Slack (gate changes, adjustment requests) posted as if typed there."""

    services: Services
    rpc: SolanaRpc | None
    roles: Roles
    client: AsyncWebClient | None = None

    def known(self, command: str) -> bool:
        return command in COMMANDS

    async def authorize(self, operator: str) -> None:
        await self.roles.require_oncall(operator)

    async def run(self, actor: Actor, command: str, args: list[str]) -> Reply:
        ctx = OpsContext(self.services, self.rpc, actor, self.roles)
        reply = await run(ctx, command, shlex.join(args))
        ui = COMMANDS[command].slack
        if self.client is not None and ui is not None and args[:1] != ["help"]:
            try:
                await ui.publish(ctx, self.client, reply)
            except Exception as exc:  # the command is done; Slack being down must not undo it
                log.warning("/v1/ops/%s: posting to Slack failed: %s", command, exc)
        return reply


def operator_runner(
    services: Services, rpc: SolanaRpc | None, client: AsyncWebClient | None
) -> OperatorRunner:
    """The runner of the operator API; `client` reads user groups and posts, when Slack is
    configured."""
    settings = services.settings
    read_group = None
    if client is not None:
        slack = client

        async def read_group_users(group: str) -> list[str]:
            answer = await slack.usergroups_users_list(usergroup=group)
            return list(answer.get("users") or [])

        read_group = read_group_users
    roles = Roles(settings.slack_oncall, settings.slack_managers, read_group)
    return OperatorRunner(services, rpc, roles, client)
