"""What happens in channels and threads: alerts, approval threads, buttons, the closeout modal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.authz import Roles
from bot.commands.adjust import adjustment_blocks, adjustment_text, policy
from bot.commands.incident import incident_blocks, incident_text
from bot.context import OpsContext
from bot.replies import Reply
from core import adjustments, incidents
from core.adjustments import DecisionKind
from core.errors import PayopsError
from core.incidents import closeout
from core.services import Services

log = logging.getLogger("payops.bot")

CLOSEOUT_CALLBACK = "incident_closeout"
CLOSEOUT_FIELDS = (
    ("root_cause", "Root cause"),
    ("affected_users", "Affected users"),
    ("corrective_action", "Corrective action"),
    ("prevention_action", "Prevention action"),
)


async def publish(
    ctx: OpsContext, client: AsyncWebClient, reply: Reply, command: dict[str, Any]
) -> None:
    """Post what the team must see: alerts, approval requests (thread roots), incidents."""
    s = ctx.services.settings
    if reply.approval_request is not None:
        await post_approval_request(ctx, client, reply.approval_request)
        return
    if reply.incident_opened is not None and s.slack_alerts_channel:
        posted = await client.chat_postMessage(
            channel=s.slack_alerts_channel, text=reply.text[:3000], blocks=reply.blocks
        )
        await incidents.set_thread(
            ctx.services.pool, reply.incident_opened, str(posted["channel"]), str(posted["ts"])
        )
        return
    if reply.incident_thread is not None:
        incident = await incidents.get(ctx.services.pool, reply.incident_thread)
        channel = (incident.slack_channel if incident else None) or s.slack_alerts_channel
        if incident is not None and channel:
            await client.chat_postMessage(
                channel=channel,
                thread_ts=incident.slack_thread_ts,
                text=reply.text[:3000],
                blocks=reply.blocks,
            )
        return
    if reply.alert and s.slack_alerts_channel:
        await client.chat_postMessage(
            channel=s.slack_alerts_channel, text=reply.text[:3000], blocks=reply.blocks
        )


async def post_approval_request(
    ctx: OpsContext, client: AsyncWebClient, adjustment_id: int
) -> None:
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


def closeout_modal(private_metadata: str = "") -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": CLOSEOUT_CALLBACK,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Close incident"},
        "submit": {"type": "plain_text", "text": "Close"},
        "blocks": [
            {
                "type": "input",
                "block_id": key,
                "label": {"type": "plain_text", "text": label},
                "element": {"type": "plain_text_input", "action_id": "value", "multiline": True},
            }
            for key, label in CLOSEOUT_FIELDS
        ],
    }


def register(
    app: AsyncApp, services: Services, roles: Roles, context_for: Callable[[str], OpsContext]
) -> None:
    async def decide(
        ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any, kind: DecisionKind
    ) -> None:
        await ack()
        user = body.get("user", {}).get("id", "")
        ctx = context_for(user)
        action = (body.get("actions") or [{}])[0]
        raw = str(action.get("value", ""))
        try:
            if not raw.isdigit():
                raise PayopsError("this button does not name an adjustment", code="invalid_action")
            adjustment_id = int(raw)
            # The button must belong to the message it was clicked on: a forged value
            # pointing at another adjustment is refused.
            message_ts = (body.get("message") or {}).get("ts")
            known = await adjustments.get(services.pool, adjustment_id)
            thread = None if known is None else known.slack_thread_ts
            if thread is None or message_ts != thread:
                raise PayopsError(
                    "this button does not belong to that adjustment", code="invalid_action"
                )
            async with services.pool.acquire() as conn:
                result = await adjustments.decide(
                    conn,
                    ctx.actor,
                    adjustment_id,
                    kind,
                    policy(ctx, await roles.managers()),
                    services.clock(),
                )
                warns = await adjustments.current_warnings(conn, result.adjustment)
        except PayopsError as exc:
            await respond(
                text=f":no_entry: {exc.message}", response_type="ephemeral", replace_original=False
            )
            return
        adj = result.adjustment
        channel, ts = adj.slack_channel, adj.slack_thread_ts
        if channel and ts:
            progress = f"{len(result.approvers)}/{result.approvals_required} approvals"
            await client.chat_postMessage(
                channel=channel,
                thread_ts=ts,
                text=f"<@{user}> {kind.value}d adjustment #{adj.id} ({progress}) "
                f"→ {result.resolution.value}"
                + (
                    f"; ledger tx {result.ledger_tx}, balance {result.balance}"
                    if result.ledger_tx
                    else ""
                ),
            )
            await client.chat_update(
                channel=channel,
                ts=ts,
                text=adjustment_text(adj, warns),
                blocks=adjustment_blocks(
                    adj, warns, buttons=adj.status.value == "PENDING_APPROVAL"
                ),
            )

    @app.action("adjust_approve")
    async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any) -> None:
        await decide(ack, body, client, respond, DecisionKind.APPROVE)

    @app.action("adjust_reject")
    async def reject(ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any) -> None:
        await decide(ack, body, client, respond, DecisionKind.REJECT)

    @app.view(CLOSEOUT_CALLBACK)
    async def closeout_submitted(
        ack: Any, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user = body.get("user", {}).get("id", "")
        ctx = context_for(user)
        values = view.get("state", {}).get("values", {})
        given = {
            key: (values.get(key, {}).get("value", {}) or {}).get("value")
            for key, _ in CLOSEOUT_FIELDS
        }
        try:
            await roles.require_oncall(user)
            meta = view.get("private_metadata") or ""
            async with services.pool.acquire() as conn:
                incident = await incidents.close_incident(
                    conn,
                    ctx.actor,
                    closeout(**given),
                    now=services.clock(),
                    incident_id=int(meta) if meta.isdigit() else None,
                )
        except PayopsError as exc:
            await ack(
                response_action="errors",
                errors={key: exc.message[:150] for key, _ in CLOSEOUT_FIELDS if not given.get(key)}
                or {"root_cause": exc.message[:150]},
            )
            return
        await ack()
        channel = incident.slack_channel or services.settings.slack_alerts_channel
        if channel:
            await client.chat_postMessage(
                channel=channel,
                thread_ts=incident.slack_thread_ts,
                text=incident_text(incident),
                blocks=incident_blocks(incident),
            )
