"""`/pay-gate status | close <reason> | open [--force <reason>] | pause-retries | resume-retries`"""

from __future__ import annotations

import asyncpg

from bot import blocks as b
from bot.context import OpsContext
from bot.replies import Reply
from bot.slack_ui import SlackUI
from core import gate, recon, smoke
from core.errors import InvalidInput
from core.gate import GateState, Switch, SwitchName

HELP = """*/pay-gate* — the verify gate (runbook: Contain, Recover)
• `/pay-gate status` — both switches, who changed them, why and when
• `/pay-gate close <reason>` — stop processing verifies (503 verify_paused; intents stay pending)
• `/pay-gate open` — resume verifies; needs a smoke test passed since the close
• `/pay-gate open --force <reason>` — resume without that smoke test (audited)
• `/pay-gate pause-retries <reason>` — tell the frontend to stop retrying verifies
• `/pay-gate resume-retries` — let the frontend retry again
• `/pay-gate rollback-check` — the runbook's Rollback Safety, step by step: gate paused,
  version and schema, snapshot/restore, a full reconciliation now, a smoke test since the close
Reopening refuses while the latest reconciliation shows drift (unless --force <reason>)."""


def _line(s: Switch) -> str:
    state = "OPEN" if s.is_open else "CLOSED"
    when = s.changed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    why = f" — {s.reason}" if s.reason else ""
    return f"{s.name.value}: {state} (by {s.changed_by} at {when}){why}"


def state_reply(state: GateState, title: str = "Verify gate", alert: bool = False) -> Reply:
    lines = [_line(state.verify), _line(state.client_retries)]
    blocks = [
        b.header(title),
        b.fields(
            [
                (
                    f"{'🟢' if s.is_open else '🔴'} {s.name.value}",
                    f"{'open' if s.is_open else '*closed*'} by {s.changed_by}\n"
                    f"{s.changed_at:%Y-%m-%d %H:%M UTC}\n{s.reason or '—'}",
                )
                for s in (state.verify, state.client_retries)
            ]
        ),
    ]
    return Reply(text=f"{title}\n" + "\n".join(lines), blocks=blocks, alert=alert)


async def latest_drift(pool: asyncpg.Pool) -> str | None:
    """What the latest reconciliation run found wrong, or None when it showed zero drift."""
    run = await recon.latest_run(pool)
    if run is None or run.zero_drift:
        return None
    return (
        f"run {run.id}: {len(run.findings)} finding(s), {run.drift_credits} credits, "
        f"{run.drift_tokens} token units"
    )


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    svc = ctx.services
    action, rest = (args[0], args[1:]) if args else ("status", [])
    if action == "status":
        return state_reply(await gate.read(svc.pool))
    if action == "rollback-check":
        from bot.commands import rollback

        return await rollback.run(ctx, rest)
    reason = " ".join(rest).strip()
    async with svc.pool.acquire() as conn:
        if action == "close":
            await gate.set_switch(
                conn, SwitchName.VERIFY, is_open=False, reason=reason, actor=ctx.actor
            )
            title = f"Verify CLOSED by {ctx.actor.id}"
        elif action == "open":
            force = None
            if rest[:1] == ["--force"]:
                force = " ".join(rest[1:]).strip()
                if not force:
                    raise InvalidInput("open --force needs a reason", code="reason_required")
            current = (await gate.read(conn)).verify
            gate.check_reopen(
                current,
                await smoke.last_passed_at(conn),
                force_reason=force,
                drift=await latest_drift(svc.pool),
            )
            why = f"forced: {force}" if force else "smoke test passed"
            await gate.set_switch(
                conn, SwitchName.VERIFY, is_open=True, reason=why, actor=ctx.actor
            )
            title = f"Verify OPEN by {ctx.actor.id}"
        elif action == "pause-retries":
            await gate.set_switch(
                conn, SwitchName.CLIENT_RETRIES, is_open=False, reason=reason, actor=ctx.actor
            )
            title = f"Frontend verify retries PAUSED by {ctx.actor.id}"
        elif action == "resume-retries":
            await gate.set_switch(
                conn,
                SwitchName.CLIENT_RETRIES,
                is_open=True,
                reason=reason or "resumed",
                actor=ctx.actor,
            )
            title = f"Frontend verify retries RESUMED by {ctx.actor.id}"
        else:
            raise InvalidInput(f"unknown gate action {action!r}\n{HELP}", code="invalid_arguments")
        state = await gate.read(conn)
    svc.gate.invalidate()
    return state_reply(state, title, alert=True)


SLACK = SlackUI()
