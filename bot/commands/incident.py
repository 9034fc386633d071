"""`/pay-incident open <title> | note <text> | close`: the incident record, in a thread."""

from __future__ import annotations

from bot import blocks as b
from bot.context import OpsContext
from bot.replies import Reply
from core import incidents
from core.errors import InvalidInput
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
                # In Slack the closeout form (a modal) opens instead; see bot/interactions.py.
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
            if rest and not rest[0].isdigit():
                raise InvalidInput("usage: /pay-incident show [id]", code="invalid_arguments")
            if rest:
                found = await incidents.get(conn, int(rest[0]))
            else:
                open_ones = await incidents.list_open(conn)
                found = open_ones[-1] if open_ones else None
            if found is None:
                return Reply(text="No such incident (and none open).")
            notes = await incidents.notes(conn, found.id)
            text = incident_text(found) + "".join(f"\n- {n.author}: {n.text}" for n in notes)
            return Reply(text=text, blocks=incident_blocks(found))
    raise InvalidInput(f"unknown incident action {action!r}\n{HELP}", code="invalid_arguments")
