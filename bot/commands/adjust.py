"""`/pay-adjust`: audited credit adjustments, approved by managers in a thread.

In Slack a request is posted to the approvals channel as a thread root with Approve/Reject
buttons (`adjust_approve`, `adjust_reject`); each decision is replied in that thread and the
root updated. On the CLI `approve <id>` / `reject <id>` decide the same way.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta

import asyncpg
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks as b
from bot.context import OpsContext
from bot.parse import parse_id
from bot.replies import Reply
from bot.slack_ui import Click, SlackEnv, SlackUI, post_alert
from core import adjustments
from core.adjustments import Adjustment, AdjustmentPolicy, DecisionKind, new_request
from core.errors import InvalidInput, PayopsError

log = logging.getLogger("payops.bot")

APPROVE = "adjust_approve"
REJECT = "adjust_reject"

HELP = """*/pay-adjust* — audited credit corrections (runbook: Recover, Reconciliation step 3)
• `/pay-adjust <user> <±credits> "<reason>" [refs]` — request a correction; refs are tx
  signatures, intent ids and `ticket:<id>`; managers approve it in the approvals channel
• `/pay-adjust reverse <ledger tx id> "<reason>"` — reverse a duplicate credit
• `/pay-adjust approve <id>` / `/pay-adjust reject <id> [note]` — decide (managers; CLI)
• `/pay-adjust show <id>` — a request and its decisions
Never applied without a manager who is not the requester; large ones need two."""

_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{64,90}$")


def policy(ctx: OpsContext, managers: frozenset[str]) -> AdjustmentPolicy:
    s = ctx.services.settings
    return AdjustmentPolicy(
        managers=managers,
        two_approvals_above=s.adjust_two_approvals_above,
        ttl=timedelta(seconds=s.adjust_ttl_seconds),
    )


def _is_ref(token: str) -> bool:
    if token.lower().startswith("ticket:") or _BASE58.match(token):
        return True
    try:
        uuid.UUID(token)
    except ValueError:
        return False
    return True


def _credits(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,13}", text):
        raise InvalidInput(
            f"credits must be a signed integer like +50 or -20, not {text!r}",
            code="invalid_credits",
        )
    return int(text)


def adjustment_blocks(adj: Adjustment, warnings: list[str], *, buttons: bool) -> list[b.Block]:
    sign = "+" if adj.credits > 0 else ""
    refs = [*adj.refs.tx_signatures, *adj.refs.intent_ids] + (
        [f"ticket:{adj.refs.ticket}"] if adj.refs.ticket else []
    )
    out = [
        b.header(f"Adjustment #{adj.id}: {sign}{adj.credits} credits for {adj.user_id}"),
        b.fields(
            [
                ("Status", adj.status.value),
                ("Kind", adj.kind.value),
                (
                    "Requested by",
                    f"<@{adj.requester}>" if adj.requester_source == "slack" else adj.requester,
                ),
                ("Approvals needed", str(adj.approvals_required)),
                ("Expires", f"{adj.expires_at:%Y-%m-%d %H:%M} UTC"),
                ("Reverses ledger tx", str(adj.reverses_ledger_tx or "—")),
            ]
        ),
        b.section(f"*Reason:* {adj.reason}\n*Refs:* {', '.join(refs) or '—'}"),
    ]
    if warnings:
        out.append(b.section("\n".join(f":warning: {w}" for w in warnings)))
    if buttons:
        value = str(adj.id)
        out.append(
            b.actions(
                f"adjustment:{adj.id}",
                b.button("Approve", APPROVE, value, "primary"),
                b.button("Reject", REJECT, value, "danger"),
            )
        )
    return out


def adjustment_text(adj: Adjustment, warnings: list[str]) -> str:
    lines = [
        f"Adjustment #{adj.id}: {adj.credits:+d} credits for {adj.user_id} — {adj.status.value}",
        f"kind {adj.kind.value}; requested by {adj.requester}; "
        f"needs {adj.approvals_required} approval(s)",
        f"reason: {adj.reason}",
    ]
    return "\n".join(lines + [f"WARNING: {w}" for w in warnings])


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    if not args:
        raise InvalidInput(HELP, code="invalid_arguments")
    head = args[0]
    given_id = parse_id(args[1]) if len(args) > 1 else None
    async with ctx.services.pool.acquire() as conn:
        if head == "reverse":
            adj = await _reverse(ctx, conn, args, given_id)
        elif head in ("approve", "reject"):
            return await _typed_decision(ctx, conn, args, given_id)
        elif head == "show":
            return await _show(conn, args, given_id)
        else:
            adj = await _request(ctx, conn, args)
        warns = await adjustments.current_warnings(conn, adj)
    s = ctx.services.settings
    where = (
        "Posted for approval."
        if s.slack_bot_token is not None and s.slack_approvals_channel
        else f"Waiting for a manager's approval: `payops ops adjust approve {adj.id}` "
        "(no Slack approvals channel is configured)."
    )
    return Reply(
        text=adjustment_text(adj, warns) + f"\n{where}",
        blocks=adjustment_blocks(adj, warns, buttons=False),
        approval_request=adj.id,
    )


async def _reverse(
    ctx: OpsContext, conn: asyncpg.Connection, args: list[str], given_id: int | None
) -> Adjustment:
    if len(args) < 3 or given_id is None:
        raise InvalidInput(
            'usage: /pay-adjust reverse <ledger tx id> "<reason>"', code="invalid_arguments"
        )
    return await adjustments.reverse_request(
        conn,
        ctx.actor,
        given_id,
        " ".join(args[2:]),
        policy=policy(ctx, frozenset()),
        now=ctx.services.clock(),
    )


async def _typed_decision(
    ctx: OpsContext, conn: asyncpg.Connection, args: list[str], given_id: int | None
) -> Reply:
    head = args[0]
    if given_id is None:
        raise InvalidInput(f"usage: /pay-adjust {head} <id> [note]", code="invalid_arguments")
    result = await adjustments.decide(
        conn,
        ctx.actor,
        given_id,
        DecisionKind.APPROVE if head == "approve" else DecisionKind.REJECT,
        policy(ctx, await ctx.roles.managers()),
        ctx.services.clock(),
        note=" ".join(args[2:]) or None,
    )
    warns = await adjustments.current_warnings(conn, result.adjustment)
    return Reply(
        text=adjustment_text(result.adjustment, warns)
        + f"\n{ctx.actor.id} decided: {result.decision.decision.value} "
        f"({result.resolution.value})",
        blocks=adjustment_blocks(result.adjustment, warns, buttons=False),
        adjustment_decided=result.adjustment.id,
    )


async def _show(conn: asyncpg.Connection, args: list[str], given_id: int | None) -> Reply:
    if len(args) != 2 or given_id is None:
        raise InvalidInput("usage: /pay-adjust show <id>", code="invalid_arguments")
    found = await adjustments.get(conn, given_id)
    if found is None:
        raise InvalidInput(f"no adjustment {args[1]}", code="adjustment_not_found")
    warns = await adjustments.current_warnings(conn, found)
    decisions = await adjustments.decisions(conn, found.id)
    text = adjustment_text(found, warns) + "".join(
        f"\n{d.approver}: {d.decision.value} {d.note or ''}" for d in decisions
    )
    return Reply(text=text, blocks=adjustment_blocks(found, warns, buttons=False))


async def _request(ctx: OpsContext, conn: asyncpg.Connection, args: list[str]) -> Adjustment:
    if len(args) == 2:
        raise InvalidInput(
            f'a reason is required: /pay-adjust {args[0]} {args[1]} "<reason>" [refs]',
            code="reason_required",
        )
    if len(args) < 2:
        raise InvalidInput(HELP, code="invalid_arguments")
    rest = args[2:]
    refs: list[str] = []
    while rest and _is_ref(rest[-1]):
        refs.insert(0, rest.pop())
    request = new_request(
        user_id=args[0],
        credits=_credits(args[1]),
        reason=" ".join(rest),
        policy=policy(ctx, frozenset()),
        now=ctx.services.clock(),
        refs=refs,
    )
    return await adjustments.create(conn, ctx.actor, request)


# --- Slack: the approval thread and its buttons ------------------------------------------


async def publish(ctx: OpsContext, client: AsyncWebClient, reply: Reply) -> None:
    if reply.approval_request is not None:
        await post_approval_request(ctx, client, reply.approval_request)
    elif reply.adjustment_decided is not None:
        await post_typed_decision(ctx, client, reply.adjustment_decided)
    else:
        await post_alert(ctx, client, reply)


async def post_typed_decision(ctx: OpsContext, client: AsyncWebClient, adjustment_id: int) -> None:
    """A decision typed as `/pay-adjust approve|reject <id>` anywhere is posted into the
    request's thread and its root updated, as a click would be: the thread stays the whole
    record of the request."""
    adj = await adjustments.get(ctx.services.pool, adjustment_id)
    if adj is None or not (adj.slack_channel and adj.slack_thread_ts):
        return
    decisions = await adjustments.decisions(ctx.services.pool, adj.id)
    mine = [d for d in decisions if d.approver == ctx.actor.id]
    decided = f"{mine[-1].decision.value}d" if mine else "decided"
    warns = await adjustments.current_warnings(ctx.services.pool, adj)
    await client.chat_postMessage(
        channel=adj.slack_channel,
        thread_ts=adj.slack_thread_ts,
        text=f"<@{ctx.actor.id}> {decided} adjustment #{adj.id} with `/pay-adjust` "
        f"→ {adj.status.value}",
    )
    await client.chat_update(
        channel=adj.slack_channel,
        ts=adj.slack_thread_ts,
        text=adjustment_text(adj, warns),
        blocks=adjustment_blocks(adj, warns, buttons=adj.status.value == "PENDING_APPROVAL"),
    )


async def post_approval_request(
    ctx: OpsContext, client: AsyncWebClient, adjustment_id: int
) -> None:
    """The request as a thread root in the approvals channel, with Approve/Reject buttons."""
    s = ctx.services.settings
    channel = s.slack_approvals_channel or s.slack_alerts_channel
    if not channel:
        log.warning("adjustment %s: no approvals channel configured", adjustment_id)
        return
    adj = await adjustments.get(ctx.services.pool, adjustment_id)
    assert adj is not None
    warns = await adjustments.current_warnings(ctx.services.pool, adj)
    posted = await client.chat_postMessage(
        channel=channel,
        text=adjustment_text(adj, warns),
        blocks=adjustment_blocks(adj, warns, buttons=True),
    )
    await adjustments.set_thread(
        ctx.services.pool, adj.id, str(posted["channel"]), str(posted["ts"])
    )


async def _decide(env: SlackEnv, click: Click, kind: DecisionKind) -> None:
    ctx = env.context_for(click.user)
    raw = click.value
    try:
        adjustment_id = parse_id(raw)
        if adjustment_id is None:
            raise PayopsError("this button does not name an adjustment", code="invalid_action")
        # The button must belong to the message it was clicked on: a forged value
        # pointing at another adjustment is refused.
        known = await adjustments.get(env.services.pool, adjustment_id)
        thread = None if known is None else known.slack_thread_ts
        if thread is None or click.message_ts != thread:
            raise PayopsError(
                "this button does not belong to that adjustment", code="invalid_action"
            )
        async with env.services.pool.acquire() as conn:
            result = await adjustments.decide(
                conn,
                ctx.actor,
                adjustment_id,
                kind,
                policy(ctx, await env.roles.managers()),
                env.services.clock(),
            )
            warns = await adjustments.current_warnings(conn, result.adjustment)
    except PayopsError as exc:
        await click.refuse(exc.message)
        return
    adj = result.adjustment
    channel, ts = adj.slack_channel, adj.slack_thread_ts
    if not (channel and ts):
        return
    progress = f"{len(result.approvers)}/{result.approvals_required} approvals"
    applied = (
        f"; ledger tx {result.ledger_tx}, balance {result.balance}" if result.ledger_tx else ""
    )
    await click.client.chat_postMessage(
        channel=channel,
        thread_ts=ts,
        text=f"<@{click.user}> {kind.value}d adjustment #{adj.id} ({progress}) "
        f"→ {result.resolution.value}{applied}",
    )
    await click.client.chat_update(
        channel=channel,
        ts=ts,
        text=adjustment_text(adj, warns),
        blocks=adjustment_blocks(adj, warns, buttons=adj.status.value == "PENDING_APPROVAL"),
    )


async def approve(env: SlackEnv, click: Click) -> None:
    await _decide(env, click, DecisionKind.APPROVE)


async def reject(env: SlackEnv, click: Click) -> None:
    await _decide(env, click, DecisionKind.REJECT)


SLACK = SlackUI(actions={APPROVE: approve, REJECT: reject}, publish=publish)
