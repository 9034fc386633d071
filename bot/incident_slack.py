"""`/pay-incident` in Slack: the incident's thread, its own channel, the closeout form, the
postmortem file, and 📌 reactions that pin a thread message to the timeline.

- Opening posts the incident to the alerts channel; that message is the thread root the
  timeline feed (bot/incident_feed.py) posts into. An incident opened on the CLI gets its
  root from the feed instead (`give_threads`). With PAYOPS_INCIDENT_CHANNELS=true it also
  creates `#inc-<n>-<slug>` and invites the opener (the commander until one is named).
- Notes, severity, roles, updates and the closeout are replied in the thread; an update also
  goes to the alerts channel. The postmortem (`export`, and after the closeout form) is
  uploaded into the thread as a Markdown file (`files.uploadV2`).
- A 📌 (`pushpin`) reaction by someone on call on a message of an incident's thread (or of
  its own channel) adds that message to the timeline (`incident.pin`, audited).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from slack_sdk.web.async_client import AsyncWebClient

from bot.context import OpsContext
from bot.incident_blocks import (
    CLOSEOUT_CALLBACK,
    CLOSEOUT_FIELDS,
    closeout_modal,
    incident_blocks,
    incident_text,
)
from bot.parse import parse_id
from bot.replies import Reply, slack_text
from bot.slack_ui import Event, SlackEnv, SlackUI, Submission, View
from core import incidents
from core.audit import Actor
from core.errors import PayopsError
from core.incidents import Incident, closeout

log = logging.getLogger("payops.bot")

PIN = "pushpin"
Postmortem = Callable[[OpsContext, Incident], Awaitable[str]]


async def publish(ctx: OpsContext, client: AsyncWebClient, reply: Reply) -> None:
    """An opened incident becomes a thread root in the alerts channel; the rest goes into it."""
    s = ctx.services.settings
    if reply.incident_opened is not None:
        if s.slack_alerts_channel:
            posted = await client.chat_postMessage(
                channel=s.slack_alerts_channel, text=slack_text(reply.text), blocks=reply.blocks
            )
            await incidents.set_thread(
                ctx.services.pool, reply.incident_opened, str(posted["channel"]), str(posted["ts"])
            )
        if s.incident_channels:
            await open_channel(ctx, client, reply.incident_opened)
        return
    if reply.incident_thread is None:
        return
    incident = await incidents.get(ctx.services.pool, reply.incident_thread)
    if incident is None:
        return
    channel = incident.slack_channel or s.slack_alerts_channel
    # An update goes to the alerts channel too: as a thread reply also sent to the channel
    # when the thread is there, else as its own message.
    broadcast = reply.alert and channel == s.slack_alerts_channel
    if reply.alert and s.slack_alerts_channel and not broadcast:
        await client.chat_postMessage(
            channel=s.slack_alerts_channel, text=slack_text(reply.text), blocks=reply.blocks
        )
    if not channel:
        return
    if reply.file is not None:
        await upload(client, incident, reply.file, channel)
        return
    await client.chat_postMessage(
        channel=channel,
        thread_ts=incident.slack_thread_ts,
        text=slack_text(reply.text),
        blocks=reply.blocks,
        reply_broadcast=broadcast,
    )


async def upload(
    client: AsyncWebClient, incident: Incident, file: tuple[str, str], channel: str
) -> None:
    name, content = file
    await client.files_upload_v2(
        channel=channel,
        thread_ts=incident.slack_thread_ts,
        filename=name,
        title=f"Postmortem — incident #{incident.id}",
        content=content,
        initial_comment=f"Postmortem of incident #{incident.id} ({incident.title})",
    )


async def open_channel(ctx: OpsContext, client: AsyncWebClient, incident_id: int) -> None:
    """`#inc-<n>-<slug>`, with the opener invited and named commander."""
    incident = await incidents.get(ctx.services.pool, incident_id)
    if incident is None:
        return
    channel = await create_channel(ctx.services.pool, client, ctx.actor, incident)
    if incident.commander is None:
        async with ctx.services.pool.acquire() as conn:
            await incidents.set_role(
                conn, ctx.actor, "commander", ctx.actor.id, incident_id=incident.id
            )
    await client.conversations_invite(channel=channel, users=ctx.actor.id)


async def create_channel(
    pool: asyncpg.Pool, client: AsyncWebClient, actor: Actor, incident: Incident
) -> str:
    """Create the incident's own channel, record it (audited, as `actor`) and say in it
    where the timeline is; its id. Raises SlackApiError when Slack refuses the channel."""
    name = incidents.channel_name(incident.id, incident.title)
    created = await client.conversations_create(name=name)
    channel = str((created.get("channel") or {}).get("id"))
    async with pool.acquire() as conn:
        await incidents.set_channel(conn, actor, incident.id, name, channel)
    await client.chat_postMessage(
        channel=channel,
        text=f"Incident #{incident.id}: {incident.title} — the timeline is in its thread in "
        f"<#{incident.slack_channel}>"
        if incident.slack_channel
        else incident_text(incident),
    )
    return channel


def closeout_form(args: list[str]) -> View | None:
    """`/pay-incident close [n]` with nothing else asks for the closeout in a form."""
    if args[:1] != ["close"] or len(args) > 2:
        return None
    if len(args) == 2:
        number = args[1].removeprefix("#")
        return closeout_modal(number) if parse_id(number) is not None else None
    return closeout_modal()


def _submission_handler(postmortem: Postmortem) -> Callable[[SlackEnv, Submission], Any]:
    async def closeout_submitted(env: SlackEnv, form: Submission) -> None:
        ctx = env.context_for(form.user)
        values = form.view.get("state", {}).get("values", {})
        given = {
            key: (values.get(key, {}).get("value", {}) or {}).get("value")
            for key, _ in CLOSEOUT_FIELDS
        }
        try:
            await env.roles.require_oncall(form.user)
            meta = form.view.get("private_metadata") or ""
            async with env.services.pool.acquire() as conn:
                incident = await incidents.close_incident(
                    conn,
                    ctx.actor,
                    closeout(**given),
                    now=env.services.clock(),
                    incident_id=parse_id(meta),
                )
        except PayopsError as exc:
            # Slack shows errors next to form fields: the empty ones, else the first.
            await form.ack(
                response_action="errors",
                errors={key: exc.message[:150] for key, _ in CLOSEOUT_FIELDS if not given.get(key)}
                or {"root_cause": exc.message[:150]},
            )
            return
        await form.ack()
        channel = incident.slack_channel or env.services.settings.slack_alerts_channel
        if not channel:
            return
        await form.client.chat_postMessage(
            channel=channel,
            thread_ts=incident.slack_thread_ts,
            text=incident_text(incident),
            blocks=incident_blocks(incident),
        )
        markdown = await postmortem(ctx, incident)
        name = f"postmortem-incident-{incident.id}.md"
        await upload(form.client, incident, (name, markdown), channel)

    return closeout_submitted


async def _message(client: AsyncWebClient, channel: str, ts: str) -> dict[str, Any] | None:
    """The message at `ts`: a thread reply (conversations.replies) or a channel message."""
    try:
        answer = await client.conversations_replies(channel=channel, ts=ts, limit=1)
        found = [m for m in answer.get("messages") or [] if m.get("ts") == ts]
        if found:
            return dict(found[0])
    except Exception as exc:  # not a thread: read the channel's history at that ts
        log.info("conversations.replies %s %s: %s", channel, ts, exc)
    answer = await client.conversations_history(
        channel=channel, latest=ts, oldest=ts, inclusive=True, limit=1
    )
    found = [m for m in answer.get("messages") or [] if m.get("ts") == ts]
    return dict(found[0]) if found else None


async def reaction_added(env: SlackEnv, event: Event) -> None:
    """📌 on a message of an incident's thread or channel: the message joins its timeline."""
    e = event.event
    item = e.get("item") or {}
    if e.get("reaction") != PIN or item.get("type") != "message":
        return
    channel, ts = str(item.get("channel") or ""), str(item.get("ts") or "")
    try:
        await env.roles.require_oncall(event.user)
    except PayopsError:
        return  # only people on call write the record
    message = await _message(event.client, channel, ts)
    if message is None:
        return
    pool = env.services.pool
    incident = await incidents.in_channel(pool, channel, str(message.get("thread_ts") or ts))
    if incident is None or incident.status is not incidents.IncidentStatus.OPEN:
        return
    actor = Actor(event.user, "slack", str(event.body.get("event_id") or ""))
    async with pool.acquire() as conn:
        added = await incidents.pin_message(
            conn,
            actor,
            incident.id,
            author=str(message.get("user") or message.get("bot_id") or "?"),
            text=str(message.get("text") or "(no text)"),
            message_ts=ts,
        )
    if added:
        await event.client.chat_postMessage(
            channel=incident.slack_channel or channel,
            thread_ts=incident.slack_thread_ts,
            text=f"📌 <@{event.user}> added a message to the timeline of incident #{incident.id}",
        )


def slack_ui(postmortem: Postmortem) -> SlackUI:
    return SlackUI(
        views={CLOSEOUT_CALLBACK: _submission_handler(postmortem)},
        form=closeout_form,
        publish=publish,
        events={"reaction_added": reaction_added},
    )
