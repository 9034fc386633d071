"""`payops ops <command> ...` run in this process, straight against the database.

`run_ops` is the in-process runner: the operator API's client (payops/ops_remote.py) is
how an operator runs commands; this is what break-glass uses when the service is down.

Break-glass (`payops ops --break-glass "<reason>" --as <id> ...`) proves nobody: anyone
with the database's credentials can run it. So its actor is recorded as
`unverified:<id>` (core/audit.py), a `breakglass.used` audit record names the OS user, the
host and the reason, the alerts channel hears of it when Slack is configured, and it can
never decide an adjustment (core/adjustments/rules.py `decide`).
"""

from __future__ import annotations

import getpass
import shlex
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable

from bot import ops
from bot.authz import Roles
from bot.context import OpsContext
from core import audit
from core.audit import Actor
from core.config import Settings
from core.errors import ConfigError, PayopsError
from core.services import Services
from payops import compose

MAX_REASON = 500


def command_names() -> list[str]:
    """What `payops ops` offers: every command of the registry (bot/ops.py)."""
    return list(ops.COMMANDS)


async def run_ops(settings: Settings, operator: str | None, command: str, args: list[str]) -> int:
    """Run a command in this process as `operator`, checked against `settings`' roles."""
    if not operator:
        raise ConfigError("name yourself: payops ops --as <operator id> ... (or PAYOPS_OPERATOR)")
    return await _run_direct(
        settings, operator, Actor(operator, "cli", uuid.uuid4().hex), command, args
    )


async def run_break_glass(
    settings: Settings, claimed: str | None, reason: str, command: str, args: list[str]
) -> int:
    """Run a command straight against the database as an unverified operator (module
    docstring): audited as `unverified:<claimed>`, announced, never an approval."""
    if not claimed:
        raise ConfigError(
            "break-glass needs --as <the id you claim>: "
            'payops ops --break-glass "<reason>" --as <id> ...'
        )
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise ConfigError(f"break-glass needs a reason of 1 to {MAX_REASON} characters")
    actor = Actor(audit.unverified(claimed), "cli", "breakglass-" + uuid.uuid4().hex)
    facts: dict[str, object] = {
        "claimed": claimed,
        "os_user": _os_user(),
        "host": socket.gethostname(),
        "reason": reason,
        "command": command,
        "args": args,
    }

    async def announce(services: Services) -> None:
        async with services.pool.acquire() as conn:
            await audit.record(
                conn, actor, action="breakglass.used", subject=f"operator:{claimed}", after=facts
            )
        await _alert(services, facts)

    return await _run_direct(settings, claimed, actor, command, args, before=announce)


async def _run_direct(
    settings: Settings,
    operator: str,
    actor: Actor,
    command: str,
    args: list[str],
    before: Callable[[Services], Awaitable[None]] | None = None,
) -> int:
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
            if before is not None:
                await before(running.services)
            ctx = OpsContext(running.services, running.rpc, actor, roles)
            reply = await ops.run(ctx, command, text)
    except PayopsError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"payops ops {command}: {exc.message}", file=sys.stderr)
        return 1
    print(reply.text)
    return 0 if reply.ok else 1


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


async def _alert(services: Services, facts: dict[str, object]) -> None:
    """Tell the alerts channel, when Slack is configured; Slack may be why this is used, so
    failing to post is a warning, not a stop."""
    settings = services.settings
    channel = settings.slack_alerts_channel
    if settings.slack_bot_token is None or not channel:
        return
    from bot.slack_app import web_client

    text = (
        f":rotating_light: BREAK-GLASS: `payops ops {facts['command']}` run straight against "
        f"the database by OS user {facts['os_user']} on {facts['host']}, claiming to be "
        f"{facts['claimed']} (unverified). Reason: {facts['reason']}"
    )
    try:
        await web_client(services).chat_postMessage(channel=channel, text=text)
    except Exception as exc:
        print(f"payops ops: could not post the break-glass alert to Slack: {exc}", file=sys.stderr)
