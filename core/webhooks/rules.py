"""Webhook signatures and retry timing, as pure functions.

A delivery is signed as Stripe signs: the header

    Payops-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>

A receiver recomputes the HMAC over the exact bytes it received and refuses a timestamp
further than its tolerance from its own clock (a replayed old delivery). `verify` is that
check, for receivers written in Python and for the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

SIGNATURE_HEADER = "Payops-Signature"
EVENT_ID_HEADER = "Payops-Event-Id"
DEFAULT_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the outbox: its id is stable across every delivery and replay."""

    id: uuid.UUID
    seq: int
    type: str
    subject: str
    data: dict[str, Any]
    created_at: datetime


def body_of(event: Event) -> bytes:
    """The JSON a receiver gets (keys sorted, so the same event is always the same bytes)."""
    return json.dumps(
        {
            "id": str(event.id),
            "type": event.type,
            "created_at": event.created_at.isoformat(),
            "data": event.data,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Payops-Signature` header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    header: str,
    body: bytes,
    secret: bytes,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> bool:
    """True if `header` signs `body` with `secret` at a time within `tolerance` of `now`."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(now.timestamp() - timestamp) > tolerance.total_seconds():
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def backoff(attempts: int, base: float, cap: float) -> timedelta:
    """How long to wait after the `attempts`-th failed delivery: doubling from `base`, at
    most `cap`."""
    if attempts < 1:
        return timedelta(0)
    return timedelta(seconds=min(cap, base * 2 ** min(attempts - 1, 40)))


def gives_up(created_at: datetime, now: datetime, retry_for: timedelta) -> bool:
    """An event still undelivered `retry_for` after it was written is given up (dead)."""
    return now - created_at >= retry_for
