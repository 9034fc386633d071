"""The incident feed: a stream (one replica at a time, `jobs.lead`) that writes the open
incidents' timelines from the audit log (`core.incidents.follow`), posts each new entry into
its incident's thread (who, when, the audit record), and refreshes the Slack App Home of
those who opened it recently when what it shows changed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.incident_blocks import entry_blocks, who
from core import incidents, jobs
from core.services import Services

log = logging.getLogger("payops.bot")

FEED_LOCK = "incident_feed"
HomeRefresh = Callable[[Services, AsyncWebClient], Awaitable[int]]


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
    svc: Services, slack: AsyncWebClient | None, refresh_home: HomeRefresh | None = None
) -> incidents.FollowReport:
    """One round: follow the audit log, post what is new, refresh the Home views."""
    report = await incidents.follow_all(svc.pool)
    if slack is not None:
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

    async def round_() -> None:
        await feed_round(svc, slack, refresh_home)

    await jobs.lead(svc.pool, FEED_LOCK, svc.settings.incident_feed_interval_seconds, round_, stop)
