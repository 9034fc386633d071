"""The runbook's commands, independent of where they are typed: the one list of them.

`run(ctx, command, text)` is what Slack's `/pay-<command> <text>` and the CLI's
`payops ops <command> <text>` both call; it returns a `Reply` (text + blocks). Authorization
is decided before (bot/authz.py); every state change inside is audited with `ctx.actor`.

`COMMANDS` is what Slack registers (bot/slack_app.py: each slash command with its buttons and
forms), what the CLI offers (payops/cli.py's `ops` choices) and what manifest.yml must list.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot import home
from bot.commands import adjust, gate, incident, recon, rollback, smoke, triage, webhooks
from bot.context import OpsContext
from bot.replies import Reply
from bot.slack_ui import SlackUI
from core.errors import InvalidInput

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
