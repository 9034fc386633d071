"""`/pay-webhooks`: the webhook outbox — what was delivered, what is waiting, what was given up,
and delivering again (one event, or every event since a time)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from bot import blocks as b
from bot.context import OpsContext
from bot.replies import Reply
from bot.slack_ui import SlackUI
from core import webhooks
from core.errors import InvalidInput, NotFound
from core.webhooks import Delivery, Event

HELP = """*/pay-webhooks* — signed webhooks to other services (runbook: a receiver was down)
• `/pay-webhooks list [--dead|--pending] [--since <2h|1d|ISO time>]` — deliveries, newest
  first: event id, type, subject, endpoint, status, attempts, next attempt, last error
• `/pay-webhooks show <event id>` — the event's JSON (as receivers get it) and its deliveries
• `/pay-webhooks retry <event id>` — deliver it again now, to every endpoint, given up or not
• `/pay-webhooks replay --since <2h|1d|ISO time>` — deliver every event since then again
Events keep their ids (`Payops-Event-Id`): receivers drop what they already had. Retry and
replay are audited. Undelivered events are retried for PAYOPS_WEBHOOK_RETRY_SECONDS, then
given up (`dead`) and announced in the alerts channel. docs/WEBHOOKS.md has the events."""

LIST_LIMIT = 20
MAX_SINCE = timedelta(days=30)
_AGO = re.compile(r"(\d{1,5})\s*([mhd])")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_STATUS_FLAGS = {"--dead": "dead", "--pending": "pending"}
_SINCE_USAGE = "use `2h`, `30m`, `1d` or an ISO time such as `2026-11-26T10:00Z`"


def parse_since(text: str, now: datetime) -> datetime:
    """`2h`, `30m`, `1d` back from `now`, or an ISO 8601 time (no zone means UTC); not in
    the future and at most 30 days back, since a replay resends everything in between."""
    value = text.strip()
    match = _AGO.fullmatch(value.lower())
    if match:
        span = int(match[1]) * _UNIT[match[2]]
        if span > MAX_SINCE:  # before subtracting: "99999d" would leave the calendar
            raise _bad_since(f"{value!r} is more than 30 days back")
        return now - span
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise _bad_since(f"cannot read the time {value!r}") from None
    since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    if since > now:
        raise _bad_since(f"{value!r} is in the future")
    if now - since > MAX_SINCE:
        raise _bad_since(f"{value!r} is more than 30 days back")
    return since


def _bad_since(why: str) -> InvalidInput:
    return InvalidInput(f"{why}: {_SINCE_USAGE}", code="invalid_since")


def parse_event_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not an event id (a UUID, as `/pay-webhooks list` shows)",
            code="invalid_event_id",
        ) from None


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def delivery_line(d: Delivery) -> str:
    """One delivery on one line (pure); the next attempt only matters while pending."""
    nxt = _when(d.next_attempt_at) if d.status == "pending" else "-"
    error = (d.last_error or "-")[:120]
    return (
        f"{d.event.id} {d.event.type} {d.event.subject} → {d.endpoint} {d.status} "
        f"attempts={d.attempts} next={nxt} error={error}"
    )


def _sections(lines: list[str]) -> list[b.Block]:
    """Lines in as few sections as Slack's 3,000 characters per section allow."""
    chunks: list[str] = []
    for line in lines:
        if chunks and len(chunks[-1]) + len(line) + 1 <= b.MAX_SECTION:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line)
    return [b.section(c) for c in chunks]


def list_reply(found: list[Delivery], totals: dict[str, int], what: str) -> Reply:
    """At most LIST_LIMIT deliveries, newest first (pure); `found` may hold one more, which
    only says the list was cut."""
    shown = found[:LIST_LIMIT]
    summary = ", ".join(f"{n} {status}" for status, n in totals.items())
    head = f"Webhook deliveries{what}: {len(shown)} shown (all: {summary})"
    lines = [delivery_line(d) for d in shown] or ["none"]
    if len(found) > LIST_LIMIT:
        lines.append("... more: narrow with --since, or `--dead` / `--pending`")
    blocks = [b.header("Webhook deliveries"), b.context(head), *_sections(lines)]
    return Reply(text=head + "\n" + "\n".join(lines), blocks=blocks)


def show_reply(event: Event, deliveries: list[Delivery]) -> Reply:
    """The event as receivers get it, and its deliveries (pure)."""
    body = json.dumps(json.loads(webhooks.body_of(event)), indent=2, sort_keys=True)
    head = f"Webhook event {event.id}: {event.type} ({event.subject}), {_when(event.created_at)}"
    lines = [delivery_line(d) for d in deliveries] or ["no deliveries (no endpoint configured)"]
    blocks = [b.header("Webhook event"), b.context(head), b.section(b.code(body))]
    blocks += _sections(lines)
    return Reply(text=f"{head}\n{body}\n" + "\n".join(lines), blocks=blocks)


def _list_options(args: list[str], now: datetime) -> tuple[str | None, datetime | None]:
    status: str | None = None
    since: datetime | None = None
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word in _STATUS_FLAGS and status is None:
            status = _STATUS_FLAGS[word]
        elif word == "--since" and rest and since is None:
            since = parse_since(rest.pop(0), now)
        else:
            raise InvalidInput(
                f"cannot read {word!r}: use `list [--dead|--pending] [--since <time>]`",
                code="invalid_arguments",
            )
    return status, since


async def _list(ctx: OpsContext, args: list[str]) -> Reply:
    pool = ctx.services.pool
    status, since = _list_options(args, ctx.services.clock())
    found = await webhooks.deliveries(pool, status=status, since=since, limit=LIST_LIMIT + 1)
    what = (f" {status}" if status else "") + (f" since {_when(since)}" if since else "")
    return list_reply(found, await webhooks.counts(pool), what)


async def _show(ctx: OpsContext, event_id: uuid.UUID) -> Reply:
    pool = ctx.services.pool
    event = await webhooks.event(pool, event_id)
    if event is None:
        raise NotFound(f"no webhook event {event_id}", code="unknown_event")
    return show_reply(event, await webhooks.deliveries_of(pool, event_id))


async def _retry(ctx: OpsContext, event_id: uuid.UUID) -> Reply:
    count = await webhooks.retry_event(ctx.services.pool, ctx.actor, event_id)
    text = (
        f"Webhook event {event_id} will be delivered again now to {count} endpoint(s) "
        f"(retried by {ctx.actor.id})"
    )
    return Reply(text=text, blocks=[b.section(text)], alert=True)


async def _replay(ctx: OpsContext, args: list[str]) -> Reply:
    if len(args) != 2 or args[0] != "--since":
        raise InvalidInput(f"use `replay --since <time>`: {_SINCE_USAGE}", code="invalid_arguments")
    since = parse_since(args[1], ctx.services.clock())
    count = await webhooks.replay_since(ctx.services.pool, ctx.actor, since)
    text = (
        f"Webhook replay since {_when(since)}: {count} deliveries will be sent again, "
        f"same event ids (replayed by {ctx.actor.id})"
    )
    return Reply(text=text, blocks=[b.section(text)], alert=True)


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    action, rest = (args[0].lower(), args[1:]) if args else ("list", [])
    if action == "list":
        return await _list(ctx, rest)
    if action == "show" and len(rest) == 1:
        return await _show(ctx, parse_event_id(rest[0]))
    if action == "retry" and len(rest) == 1:
        return await _retry(ctx, parse_event_id(rest[0]))
    if action == "replay":
        return await _replay(ctx, rest)
    raise InvalidInput(
        "use `/pay-webhooks list [--dead|--pending] [--since <time>]`, `show <event id>`, "
        "`retry <event id>` or `replay --since <time>`",
        code="invalid_arguments",
    )


SLACK = SlackUI()
