"""Signed webhooks for other services, from a transactional outbox (see `service`)."""

from core.webhooks.redeliver import replay_since, retry_event
from core.webhooks.rules import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Event,
    backoff,
    body_of,
    gives_up,
    sign,
    verify,
)
from core.webhooks.service import BATCH, DeliveryReport, Sender, deliver, run, sender_for
from core.webhooks.store import (
    Delivery,
    counts,
    deliveries,
    deliveries_of,
    depth,
    enqueue,
    event,
    replay,
    retry,
    sync_endpoints,
)

__all__ = [
    "BATCH",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "DeliveryReport",
    "Event",
    "Sender",
    "backoff",
    "body_of",
    "counts",
    "deliver",
    "deliveries",
    "deliveries_of",
    "depth",
    "enqueue",
    "event",
    "gives_up",
    "replay",
    "replay_since",
    "retry",
    "retry_event",
    "run",
    "sender_for",
    "sign",
    "sync_endpoints",
    "verify",
]
