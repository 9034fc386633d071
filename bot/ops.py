"""The runbook's commands, independent of where they are typed.

`run(ctx, command, text)` is what Slack's `/pay-<command> <text>` and the CLI's
`payops ops <command> <text>` both call; it returns a `Reply` (text + blocks). Authorization
is decided before (bot/authz.py); every state change inside is audited with `ctx.actor`.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable

from bot.commands import adjust, gate, incident, recon, smoke, triage
from bot.context import OpsContext
from bot.replies import Reply
from core.errors import InvalidInput

Handler = Callable[[OpsContext, list[str]], Awaitable[Reply]]

COMMANDS: dict[str, tuple[Handler, str]] = {
    "triage": (triage.run, triage.HELP),
    "gate": (gate.run, gate.HELP),
    "smoke": (smoke.run, smoke.HELP),
    "adjust": (adjust.run, adjust.HELP),
    "recon": (recon.run, recon.HELP),
    "incident": (incident.run, incident.HELP),
}


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
    handler, usage = COMMANDS[command]
    args = split_args(text)
    if args[:1] == ["help"]:
        return Reply(text=usage)
    return await handler(ctx, args)
