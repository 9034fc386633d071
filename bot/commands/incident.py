"""`/pay-incident open <title> | note <text> | close`: the incident record, in a thread.

In Slack an opened incident is posted to the alerts channel and its notes and closeout go
into that thread; `close` opens the closeout form (`incident_closeout`) instead of taking
flags, which the CLI needs.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks as b
from bot.context import OpsContext
from bot.parse import parse_id
from bot.replies import Reply, slack_text
from bot.slack_ui import SlackEnv, SlackUI, Submission, View
from core import incidents
from core.errors import InvalidInput, PayopsError
from core.incidents import Incident, closeout

HELP = """*/pay-incident* — incident record (runbook: Incident Response, Closeout)
• `/pay-incident open <title>` — open an incident; its thread collects the notes
• `/pay-incident note <text>` — add a note to the open incident
• `/pay-incident close` — a form asks for root cause, affected users, corrective action and
  prevention action (CLI: `close --root-cause .. --affected-users .. --corrective-action ..
  --prevention-action ..`)
• `/pay-incident show [id]` — an incident and its notes"""

CLOSE_FLAGS = {
    "--root-cause": "root_cause",
    "--affected-users": "affected_users",
    "--corrective-action": "corrective_action",
    "--prevention-action": "prevention_action",
}
CLOSEOUT_CALLBACK = "incident_closeout"
CLOSEOUT_FIELDS = (
    ("root_cause", "Root cause"),
    ("affected_users", "Affected users"),
    ("corrective_action", "Corrective action"),
    ("prevention_action", "Prevention action"),
)


def incident_text(incident: Incident) -> str:
    lines = [
        f"Incident #{incident.id}: {incident.title} — {incident.status.value}",
        f"opened by {incident.opened_by} at {incident.opened_at:%Y-%m-%d %H:%M} UTC",
    ]
    if incident.closeout is not None:
        c = incident.closeout
        lines += [
            f"root cause: {c.root_cause}",
            f"affected users: {c.affected_users}",
            f"corrective action: {c.corrective_action}",
            f"prevention action: {c.prevention_action}",
        ]
    return "\n".join(lines)


def incident_blocks(incident: Incident) -> list[b.Block]:
    out = [
        b.header(f"Incident #{incident.id}: {incident.title}"),
        b.context(incident_text(incident).split("\n")[1]),
    ]
    if incident.closeout is not None:
        c = incident.closeout
        out.append(
            b.fields(
                [
                    ("Root cause", c.root_cause),
                    ("Affected users", c.affected_users),
                    ("Corrective action", c.corrective_action),
                    ("Prevention action", c.prevention_action),
                ]
            )
        )
    return out


def parse_close_flags(args: list[str]) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    current: str | None = None
    for token in args:
        if token in CLOSE_FLAGS:
            current = CLOSE_FLAGS[token]
            values[current] = []
        elif current is None:
            raise InvalidInput(
                f"unexpected {token!r}; use {' '.join(CLOSE_FLAGS)}", code="invalid_arguments"
            )
        else:
            values[current].append(token)
    return {k: " ".join(v) for k, v in values.items()}


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    svc = ctx.services
    now = svc.clock()
    action, rest = (args[0], args[1:]) if args else ("show", [])
    async with svc.pool.acquire() as conn:
        if action == "open":
            incident = await incidents.open_incident(conn, ctx.actor, " ".join(rest), now=now)
            return Reply(
                text=incident_text(incident),
                blocks=incident_blocks(incident),
                alert=True,
                incident_opened=incident.id,
            )
        if action == "note":
            note = await incidents.add_note(conn, ctx.actor, " ".join(rest), now=now)
            return Reply(
                text=f"Note added to incident #{note.incident_id} by {ctx.actor.id}: {note.text}",
                incident_thread=note.incident_id,
            )
        if action == "close":
            if not rest:
                # In Slack the closeout form (a modal) opens instead: closeout_form below.
                raise InvalidInput(
                    "close needs the closeout: " + " ".join(f"{f} <text>" for f in CLOSE_FLAGS),
                    code="closeout_required",
                )
            fields = parse_close_flags(rest)
            incident = await incidents.close_incident(
                conn,
                ctx.actor,
                closeout(**{name: fields.get(name) for name in CLOSE_FLAGS.values()}),
                now=now,
            )
            return Reply(
                text=incident_text(incident),
                blocks=incident_blocks(incident),
                incident_thread=incident.id,
            )
        if action == "show":
            shown = parse_id(rest[0]) if rest else None
            if rest and shown is None:
                raise InvalidInput("usage: /pay-incident show [id]", code="invalid_arguments")
            if shown is not None:
                found = await incidents.get(conn, shown)
            else:
                open_ones = await incidents.list_open(conn)
                found = open_ones[-1] if open_ones else None
            if found is None:
                return Reply(text="No such incident (and none open).")
            notes = await incidents.notes(conn, found.id)
            text = incident_text(found) + "".join(f"\n- {n.author}: {n.text}" for n in notes)
            return Reply(text=text, blocks=incident_blocks(found))
    raise InvalidInput(f"unknown incident action {action!r}\n{HELP}", code="invalid_arguments")


# --- Slack: the incident thread and the closeout form --------------------------------------


async def publish(ctx: OpsContext, client: AsyncWebClient, reply: Reply) -> None:
    """An opened incident becomes a thread root in the alerts channel; notes go into it."""
    s = ctx.services.settings
    if reply.incident_opened is not None:
        if s.slack_alerts_channel:
            posted = await client.chat_postMessage(
                channel=s.slack_alerts_channel, text=slack_text(reply.text), blocks=reply.blocks
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
                text=slack_text(reply.text),
                blocks=reply.blocks,
            )


def closeout_modal(private_metadata: str = "") -> View:
    """The runbook's closeout as a form: root cause, affected users, corrective, prevention."""
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


def closeout_form(args: list[str]) -> View | None:
    """`/pay-incident close` with nothing after it asks for the closeout in a form."""
    return closeout_modal() if args == ["close"] else None


async def closeout_submitted(env: SlackEnv, form: Submission) -> None:
    ctx = env.context_for(form.user)
    values = form.view.get("state", {}).get("values", {})
    given = {
        key: (values.get(key, {}).get("value", {}) or {}).get("value") for key, _ in CLOSEOUT_FIELDS
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
    if channel:
        await form.client.chat_postMessage(
            channel=channel,
            thread_ts=incident.slack_thread_ts,
            text=incident_text(incident),
            blocks=incident_blocks(incident),
        )


SLACK = SlackUI(views={CLOSEOUT_CALLBACK: closeout_submitted}, form=closeout_form, publish=publish)
