"""`payops ops <command> ...`: the Slack commands, run from a shell when Slack is down."""

from __future__ import annotations

import shlex
import sys
import uuid

from bot import ops
from bot.authz import Roles
from bot.context import OpsContext
from core.audit import Actor
from core.config import Settings
from core.errors import ConfigError, PayopsError
from payops import compose


def command_names() -> list[str]:
    """What `payops ops` offers: every command of the registry (bot/ops.py)."""
    return list(ops.COMMANDS)


async def run_ops(settings: Settings, operator: str | None, command: str, args: list[str]) -> int:
    if not operator:
        raise ConfigError("name yourself: payops ops --as <operator id> ... (or PAYOPS_OPERATOR)")
    roles = Roles(settings.slack_oncall, settings.slack_managers)
    text = shlex.join(args)
    try:
        if args[:1] != ["help"]:
            await roles.require_oncall(operator)
        # The chain is not checked at start: the CLI must work while the RPC is down.
        async with (
            compose.database(settings) as dsn,
            compose.services(settings, dsn, check_chain=False) as running,
        ):
            ctx = OpsContext(
                running.services, running.rpc, Actor(operator, "cli", uuid.uuid4().hex), roles
            )
            reply = await ops.run(ctx, command, text)
    except PayopsError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"payops ops {command}: {exc.message}", file=sys.stderr)
        return 1
    print(reply.text)
    return 0 if reply.ok else 1
