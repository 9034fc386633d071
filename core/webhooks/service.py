"""Webhook delivery: the outbox's events to every configured endpoint, at least once, signed.

`deliver` makes one round: for each enabled endpoint, the due deliveries (each the oldest
undelivered event of its subject, so one intent's events arrive in order) are POSTed
concurrently, each signed (`rules.sign`), `BATCH` at a time; an endpoint that took a whole
batch gets the next one in the same round (for up to `ROUND_SECONDS`), so a backlog drains
at the receiver's pace rather than `BATCH` per tick. A 2xx answer marks it delivered;
anything else is retried with exponential backoff until `webhook_retry_seconds` after the
event was written, then given up ('dead': listed by `payops ops webhooks list`, announced in
the alerts channel, and delivered again by `retry` or `replay`). `run` repeats rounds on one
replica at a time (`jobs.lead`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp

from core import jobs
from core.services import Services
from core.webhooks import rules, store

log = logging.getLogger("payops.webhooks")

DISPATCH_LOCK = "webhooks"
BATCH = 100
ROUND_SECONDS = 2.0  # a round stops starting batches after this long: the next tick goes on
CONCURRENCY = 8


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    dead: list[store.Delivery] = field(default_factory=list)


class Sender:
    """POSTs signed events; one HTTP session for the process."""

    def __init__(self, secret: bytes, timeout: float) -> None:
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, url: str, event: rules.Event) -> str | None:
        """None when the endpoint took the event (2xx), else what went wrong."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = rules.body_of(event)
        headers = {
            "Content-Type": "application/json",
            rules.EVENT_ID_HEADER: str(event.id),
            rules.SIGNATURE_HEADER: rules.sign(self._secret, int(time.time()), body),
        }
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def sender_for(svc: Services) -> Sender | None:
    """The sender, or None when no endpoint or no secret is configured."""
    s = svc.settings
    if not s.webhook_url or s.webhook_secret is None:
        return None
    return Sender(s.webhook_secret.get_secret_value().encode(), s.webhook_timeout_seconds)


async def deliver(svc: Services, sender: Sender) -> DeliveryReport:
    """One round of deliveries to every enabled endpoint: a batch each, then another to
    each endpoint that took every delivery of a full batch, in turn, until none did or the
    round has lasted `ROUND_SECONDS`. An endpoint that failed one waits for the next tick
    (its failed deliveries for their backoff)."""
    report = DeliveryReport()
    limit = asyncio.Semaphore(CONCURRENCY)
    deadline = time.monotonic() + ROUND_SECONDS
    endpoints = await store.enabled_endpoints(svc.pool)
    while endpoints:
        more = []
        for endpoint in endpoints:
            failed_before = report.failed
            due = await store.due(svc.pool, endpoint, BATCH)
            await asyncio.gather(*(_deliver_one(svc, sender, d, report, limit) for d in due))
            if len(due) == BATCH and report.failed == failed_before:
                more.append(endpoint)
        if time.monotonic() >= deadline:
            break
        endpoints = more
    return report


async def _deliver_one(
    svc: Services,
    sender: Sender,
    delivery: store.Delivery,
    report: DeliveryReport,
    limit: asyncio.Semaphore,
) -> None:
    async with limit:
        error = await sender.send(delivery.endpoint, delivery.event)
    event = delivery.event
    if error is None:
        await store.delivered(svc.pool, event.id, delivery.endpoint)
        report.delivered += 1
        svc.metrics.webhook_deliveries.labels("delivered").inc()
        return
    retry_at = _retry_at(svc, delivery, svc.clock())
    await store.failed(svc.pool, event.id, delivery.endpoint, error, retry_at=retry_at)
    report.failed += 1
    svc.metrics.webhook_deliveries.labels("failed" if retry_at else "dead").inc()
    if retry_at is None:
        report.dead.append(delivery)
    log.warning(
        "webhook %s to %s failed (%s); %s",
        event.id,
        delivery.endpoint,
        error,
        f"next try at {retry_at.isoformat()}" if retry_at else "given up",
    )


def _retry_at(svc: Services, delivery: store.Delivery, now: datetime) -> datetime | None:
    s = svc.settings
    if rules.gives_up(delivery.event.created_at, now, timedelta(seconds=s.webhook_retry_seconds)):
        return None
    wait = rules.backoff(
        delivery.attempts + 1, s.webhook_backoff_base_seconds, s.webhook_backoff_cap_seconds
    )
    return now + wait


DeadHandler = Callable[[list[store.Delivery]], Awaitable[None]]


async def run(
    svc: Services, sender: Sender, stop: asyncio.Event, on_dead: DeadHandler | None = None
) -> None:
    """Deliver every `webhook_interval_seconds` while this replica leads (`jobs.lead`)."""

    async def round_() -> None:
        report = await deliver(svc, sender)
        svc.metrics.webhook_outbox_depth.set(await store.depth(svc.pool))
        if report.dead and on_dead is not None:
            await on_dead(report.dead)

    try:
        await jobs.lead(
            svc.pool, DISPATCH_LOCK, svc.settings.webhook_interval_seconds, round_, stop
        )
    finally:
        await sender.close()
