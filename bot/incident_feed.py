"""The incident feed: a stream (one replica at a time, `jobs.lead`) that writes the open
incidents' timelines from the audit log (`core.incidents.follow`), gives a thread to an open
incident that has none (opened on the CLI, or while Slack could not be reached) and, with
PAYOPS_INCIDENT_CHANNELS, its own channel, posts each new entry into its incident's thread
(who, when, the audit record), and refreshes the Slack App Home of those who opened it
recently when what it shows changed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.incident_blocks import entry_blocks, incident_blocks, incident_text, who
from bot.incident_slack import create_channel
from core import incidents, jobs
from core.audit import Actor
from core.incidents import Incident
from core.services import Services

log = logging.getLogger("payops.bot")

FEED_LOCK = "incident_feed"
FEED_ACTOR = Actor("incident-feed", "scheduler")  # records the channels it creates
HomeRefresh = Callable[[Services, AsyncWebClient], Awaitable[int]]


# `/pay-incident open` in Slack posts the thread root itself, right after opening: the feed
# leaves an incident this long to it before giving it one.
THREADLESS_GRACE = timedelta(seconds=30)


async def give_threads(svc: Services, slack: AsyncWebClient) -> int:
    """Post the card of each open incident without a thread to the alerts channel, as
    `/pay-incident open` does, and make it the incident's thread: the entries recorded so
    far are then posted into it, from the opening on. How many got one."""
    channel = svc.settings.slack_alerts_channel
    if not channel:
        return 0
    given = 0
    now = svc.clock()
    for incident in await incidents.list_open(svc.pool):
        if incident.slack_thread_ts is not None or now - incident.opened_at < THREADLESS_GRACE:
            continue
        try:
            posted = await slack.chat_postMessage(
                channel=channel, text=incident_text(incident), blocks=incident_blocks(incident)
            )
        except SlackApiError as exc:  # one incident's refusal must not stop the others' feed
            log.warning(
                "incident %d has no Slack thread and its card was refused: %s",
                incident.id,
                exc.response.get("error"),
            )
            continue
        ts = str(posted["ts"])
        if await incidents.adopt_thread(svc.pool, incident.id, str(posted["channel"]), ts):
            given += 1
            log.info("incident %d had no Slack thread: posted one", incident.id)
        else:  # it got one meanwhile: ours would be a second root
            await slack.chat_delete(channel=str(posted["channel"]), ts=ts)
    return given


async def give_channels(svc: Services, slack: AsyncWebClient, refused: set[int]) -> int:
    """With PAYOPS_INCIDENT_CHANNELS: create `#inc-<n>-<slug>` for each open incident that
    has none (opened on the CLI, or Slack refused it then), as `/pay-incident open` does,
    and invite its opener and commander. An incident whose channel Slack refuses (a name
    taken, a missing scope) is in `refused` and not asked for again by this feed; one that
    was rate-limited is asked again next round. How many got one."""
    if not svc.settings.incident_channels:
        return 0
    given = 0
    now = svc.clock()
    for incident in await incidents.list_open(svc.pool):
        if incident.incident_channel is not None or incident.id in refused:
            continue
        if now - incident.opened_at < THREADLESS_GRACE:  # the Slack command's own to create
            continue
        try:
            channel = await create_channel(svc.pool, slack, FEED_ACTOR, incident)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error != "ratelimited":
                refused.add(incident.id)
            log.warning(
                "incident %d has no channel of its own and Slack refused one: %s",
                incident.id,
                error,
            )
            continue
        given += 1
        log.info("incident %d had no channel of its own: created one", incident.id)
        await _invite(slack, channel, incident)
    return given


async def _invite(slack: AsyncWebClient, channel: str, incident: Incident) -> None:
    """The opener and the commander, each on their own: one Slack does not know (an id
    claimed on the CLI) leaves the other invited."""
    for user in dict.fromkeys(u for u in (incident.opened_by, incident.commander) if u):
        try:
            await slack.conversations_invite(channel=channel, users=user)
        except SlackApiError as exc:
            log.warning(
                "incident %d: %s could not be invited to its channel: %s",
                incident.id,
                user,
                exc.response.get("error"),
            )


async def post_entries(svc: Services, slack: AsyncWebClient) -> int:
    """Post the entries not yet in their thread, oldest first; how many were posted."""
    posted = 0
    for entry, channel, thread_ts in await incidents.unposted(svc.pool):
        if incidents.should_post(entry):
            answer = await slack.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=f"{entry.text} — {who(entry.actor)} (audit #{entry.audit_id})",
                blocks=entry_blocks(entry),
            )
            channel, thread_ts = str(answer["channel"]), str(answer["ts"])
            posted += 1
        await incidents.mark_posted(svc.pool, entry.id, channel, thread_ts)
    return posted


async def feed_round(
    svc: Services,
    slack: AsyncWebClient | None,
    refresh_home: HomeRefresh | None = None,
    refused: set[int] | None = None,
) -> incidents.FollowReport:
    """One round: follow the audit log, give threads and channels, post what is new,
    refresh the Home views. `refused`: the incidents whose channel Slack refused, kept by
    the feed across rounds."""
    report = await incidents.follow_all(svc.pool)
    if slack is not None:
        await give_threads(svc, slack)
        await give_channels(svc, slack, set() if refused is None else refused)
        await post_entries(svc, slack)
        if report.home_changed and refresh_home is not None:
            await refresh_home(svc, slack)
    return report


async def run(
    svc: Services,
    slack: AsyncWebClient | None,
    stop: asyncio.Event,
    refresh_home: HomeRefresh | None = None,
) -> None:
    """Every PAYOPS_INCIDENT_FEED_INTERVAL_SECONDS while this replica leads."""

    refused: set[int] = set()

    async def round_() -> None:
        await feed_round(svc, slack, refresh_home, refused)

    await jobs.lead(svc.pool, FEED_LOCK, svc.settings.incident_feed_interval_seconds, round_, stop)
