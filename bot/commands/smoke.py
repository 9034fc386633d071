"""`/pay-smoke`: the deploy-day checklist as one command."""

from __future__ import annotations

from bot import blocks as b
from bot.context import OpsContext
from bot.replies import Reply
from bot.slack_ui import SlackUI
from core.errors import InvalidInput
from core.smoke import SmokeResult, run_smoke

HELP = """*/pay-smoke* — the deploy-day smoke test (runbook: Operator Checklist, after deploy)
Creates a test intent, verifies it against the configured known-valid transaction, checks the
credit increment and that a duplicate verify does not double-credit, checks route logs and
metrics — inside a database transaction that is rolled back, so no test credit remains.
A passing run is what `/pay-gate open` requires after a close."""


def smoke_reply(result: SmokeResult, who: str) -> Reply:
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [f"{'ok ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in result.checks]
    blocks = [
        b.header(f"Smoke test {verdict} (run {result.run_id})"),
        b.section("\n".join(f"{b.mark(c.ok)} *{c.name}* — {c.detail}" for c in result.checks)),
        b.context(f"run by {who} at {result.finished_at:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    text = f"Smoke test {verdict} (run {result.run_id}, by {who})\n" + "\n".join(lines)
    # A failed smoke test is a "no" a deploy script must see: `payops ops smoke` exits 1.
    return Reply(text=text, blocks=blocks, alert=True, ok=result.passed)


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    if args:
        raise InvalidInput(f"/pay-smoke takes no arguments\n{HELP}", code="invalid_arguments")
    return smoke_reply(await run_smoke(ctx.services, ctx.actor), ctx.actor.id)


SLACK = SlackUI()
