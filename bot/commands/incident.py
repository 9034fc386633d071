"""`/pay-incident`: the incident record — open, note, severity, roles, status updates, the
timeline that writes itself, measured impact, the closeout and the postmortem.

Every subcommand that acts on an incident takes its number (`note 2 <text>`, `close #2`);
without one it is the incident whose own channel the command was typed in, else the single
open incident. In Slack, an opened incident is posted to the alerts channel and its thread
collects what happens (bot/incident_slack.py); `close` opens the closeout form.
"""

from __future__ import annotations

import re
from datetime import timedelta

import asyncpg

from bot import incident_slack
from bot.context import OpsContext
from bot.incident_blocks import (
    incident_blocks,
    incident_text,
    list_text,
    timeline_text,
    update_blocks,
    update_text,
)
from bot.replies import Reply
from core import incidents
from core.errors import InvalidInput
from core.incidents import Incident, closeout

HELP = """*/pay-incident* — incident record (runbook: Incident Response, Closeout)
• `/pay-incident open <title>` — open an incident; its thread collects the timeline
• `/pay-incident note [n] <text>` — add a note (`n`: the incident's number, e.g. `note 2 ...`
  or `note #2 ...`; without it, the incident of this channel or the single open one)
• `/pay-incident sev [n] 1|2|3` — set the severity (1 is the worst)
• `/pay-incident role [n] commander|comms @user` — name the incident commander or comms lead
• `/pay-incident update [n] <next step>` — a status update (state, severity, measured impact,
  next step) to the alerts channel and the thread
• `/pay-incident list` — open incidents, then the latest closed ones
• `/pay-incident show [n]` — an incident with its measured impact
• `/pay-incident timeline [n]` — every runbook action taken while it was open, with who, when
  and the audit record
• `/pay-incident export [n]` — the postmortem as Markdown (posted as a file in the thread)
• `/pay-incident close [n]` — a form asks for root cause, affected users, corrective action and
  prevention action (CLI: `close [n] --root-cause .. --affected-users .. --corrective-action ..
  --prevention-action ..`)"""

CLOSE_FLAGS = {
    "--root-cause": "root_cause",
    "--affected-users": "affected_users",
    "--corrective-action": "corrective_action",
    "--prevention-action": "prevention_action",
}
_NUMBER = re.compile(r"^#?([0-9]{1,12})$")  # ASCII digits only (bot/parse.py)


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


def take_number(rest: list[str], *, text_follows: bool = False) -> tuple[int | None, list[str]]:
    """A leading incident number (`2` or `#2`) and the rest. With `text_follows`, a bare
    number is only the incident's when more words follow it (`note 2 rolled back`)."""
    match = _NUMBER.match(rest[0]) if rest else None
    if match is None:
        return None, rest
    if rest[0].startswith("#") or not text_follows or len(rest) > 1:
        return int(match[1]), rest[1:]
    return None, rest


async def _which(ctx: OpsContext, conn: asyncpg.Connection, number: int | None) -> int | None:
    """The incident meant: named, else the one whose channel this is, else None (the single
    open one, decided under the row lock by the service)."""
    if number is not None:
        return number
    here = await incidents.in_channel(conn, ctx.channel, None)
    return None if here is None else here.id


async def _measure(ctx: OpsContext, incident: Incident) -> incidents.Impact:
    svc = ctx.services
    sla = timedelta(seconds=svc.settings.pending_sla_seconds)
    return await incidents.measure(svc.pool, incident, now=svc.clock(), pending_sla=sla)


async def _open(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    incident = await incidents.open_incident(
        conn, ctx.actor, " ".join(rest), now=ctx.services.clock()
    )
    return Reply(
        text=incident_text(incident),
        blocks=incident_blocks(incident),
        alert=True,
        incident_opened=incident.id,
    )


async def _note(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, rest = take_number(rest, text_follows=True)
    if number is not None and await incidents.get(conn, number) is None:
        number, rest = None, [str(number), *rest]  # "note 500 users ..." is the text
    note = await incidents.add_note(
        conn,
        ctx.actor,
        " ".join(rest),
        now=ctx.services.clock(),
        incident_id=await _which(ctx, conn, number),
    )
    return Reply(
        text=f"Note added to incident #{note.incident_id} by {ctx.actor.id}: {note.text}",
        incident_thread=note.incident_id,
    )


async def _close(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, rest = take_number(rest)
    if not rest:
        # In Slack the closeout form (a modal) opens instead: incident_slack.closeout_form.
        raise InvalidInput(
            "close needs the closeout: " + " ".join(f"{f} <text>" for f in CLOSE_FLAGS),
            code="closeout_required",
        )
    fields = parse_close_flags(rest)
    incident = await incidents.close_incident(
        conn,
        ctx.actor,
        closeout(**{name: fields.get(name) for name in CLOSE_FLAGS.values()}),
        now=ctx.services.clock(),
        incident_id=await _which(ctx, conn, number),
    )
    return Reply(
        text=incident_text(incident),
        blocks=incident_blocks(incident),
        incident_thread=incident.id,
    )


async def _sev(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, rest = take_number(rest) if len(rest) > 1 else (None, rest)
    if len(rest) != 1:
        raise InvalidInput("usage: /pay-incident sev [n] 1|2|3", code="invalid_arguments")
    incident = await incidents.set_severity(
        conn, ctx.actor, rest[0], incident_id=await _which(ctx, conn, number)
    )
    return Reply(
        text=f"Incident #{incident.id} is SEV{incident.severity} (set by {ctx.actor.id})",
        incident_thread=incident.id,
    )


async def _role(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, rest = take_number(rest)
    if len(rest) != 2:
        raise InvalidInput(
            "usage: /pay-incident role [n] commander|comms @user", code="invalid_arguments"
        )
    incident = await incidents.set_role(
        conn, ctx.actor, rest[0], rest[1], incident_id=await _which(ctx, conn, number)
    )
    user = incident.commander if rest[0].lower() == "commander" else incident.comms
    return Reply(
        text=f"Incident #{incident.id}: {rest[0].lower()} is {user} (named by {ctx.actor.id})",
        incident_thread=incident.id,
    )


async def _update(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, rest = take_number(rest, text_follows=True)
    incident = await incidents.find(conn, await _which(ctx, conn, number))
    impact = await _measure(ctx, incident)
    text = " ".join(rest)
    await incidents.record_update(
        conn, ctx.actor, text, incidents.impact_facts(impact), incident_id=incident.id
    )
    return Reply(
        text=update_text(incident, impact, text.strip(), ctx.actor.id),
        blocks=update_blocks(incident, impact, text.strip(), ctx.actor.id),
        alert=True,
        incident_thread=incident.id,
    )


async def _show(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, rest = take_number(rest)
    if rest:
        raise InvalidInput("usage: /pay-incident show [n]", code="invalid_arguments")
    incident = await incidents.find(conn, await _which(ctx, conn, number))
    impact = await _measure(ctx, incident)
    lines = [incident_text(incident), "measured impact:"]
    lines += [f"  {line}" for line in incidents.impact_lines(impact)]
    lines += [f"- {n.author}: {n.text}" for n in await incidents.notes(conn, incident.id)]
    return Reply(text="\n".join(lines), blocks=incident_blocks(incident, impact))


async def _timeline(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, _ = take_number(rest)
    incident = await incidents.find(conn, await _which(ctx, conn, number))
    await incidents.follow_all(ctx.services.pool)
    return Reply(text=timeline_text(incident, await incidents.entries(conn, incident.id)))


async def _export(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    number, _ = take_number(rest)
    incident = await incidents.find(conn, await _which(ctx, conn, number))
    markdown = await postmortem(ctx, incident)
    return Reply(
        text=markdown,
        file=(f"postmortem-incident-{incident.id}.md", markdown),
        incident_thread=incident.id,
    )


async def postmortem(ctx: OpsContext, incident: Incident) -> str:
    """The incident's postmortem, with its timeline read up to now."""
    await incidents.follow_all(ctx.services.pool)
    impact = await _measure(ctx, incident)
    entries = await incidents.entries(ctx.services.pool, incident.id)
    return incidents.render_postmortem(incident, impact, entries, now=ctx.services.clock())


async def _list(ctx: OpsContext, conn: asyncpg.Connection, rest: list[str]) -> Reply:
    return Reply(text=list_text(await incidents.recent(conn), ctx.services.clock()))


ACTIONS = {
    "open": _open,
    "note": _note,
    "close": _close,
    "sev": _sev,
    "role": _role,
    "update": _update,
    "show": _show,
    "timeline": _timeline,
    "export": _export,
    "list": _list,
}


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    action, rest = (args[0], args[1:]) if args else ("show", [])
    handler = ACTIONS.get(action)
    if handler is None:
        raise InvalidInput(f"unknown incident action {action!r}\n{HELP}", code="invalid_arguments")
    async with ctx.services.pool.acquire() as conn:
        return await handler(ctx, conn, rest)


SLACK = incident_slack.slack_ui(postmortem)
