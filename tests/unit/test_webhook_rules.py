"""Webhook signatures (as Stripe signs) and retry timing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.webhooks import Event, backoff, body_of, gives_up, sign, verify

SECRET = b"whsec-test-0123456789"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())


def test_a_signature_verifies_over_the_exact_body_and_time() -> None:
    body = b'{"id":"e1"}'
    header = sign(SECRET, T, body)
    assert header.startswith(f"t={T},v1=")
    assert verify(header, body, SECRET, NOW)


@pytest.mark.parametrize(
    ("name", "header", "body", "secret", "now"),
    [
        ("another body", sign(SECRET, T, b"{}"), b'{"x":1}', SECRET, NOW),
        ("another secret", sign(b"other-secret-0123456", T, b"{}"), b"{}", SECRET, NOW),
        ("too old: a replay", sign(SECRET, T, b"{}"), b"{}", SECRET, NOW + timedelta(minutes=6)),
        ("from the future", sign(SECRET, T, b"{}"), b"{}", SECRET, NOW - timedelta(minutes=6)),
        ("no timestamp", "v1=abc", b"{}", SECRET, NOW),
        ("two timestamps", f"t={T},t={T},v1=abc", b"{}", SECRET, NOW),
        ("a timestamp that is no number", "t=²,v1=abc", b"{}", SECRET, NOW),
        ("no signature", f"t={T}", b"{}", SECRET, NOW),
        ("garbage", "garbage", b"{}", SECRET, NOW),
    ],
)
def test_a_signature_that_does_not_match_is_refused(
    name: str, header: str, body: bytes, secret: bytes, now: datetime
) -> None:
    assert not verify(header, body, secret, now), name


def test_a_rotated_secret_may_sign_twice() -> None:
    body = b"{}"
    old = sign(b"old-secret-0123456789", T, body).partition(",v1=")[2]
    header = sign(SECRET, T, body) + f",v1={old}"
    assert verify(header, body, SECRET, NOW)
    assert verify(header, body, b"old-secret-0123456789", NOW)


def test_the_body_is_the_same_bytes_for_the_same_event() -> None:
    event = Event(uuid.uuid4(), 1, "intent.confirmed", "intent:x", {"b": 1, "a": "2"}, NOW)
    assert body_of(event) == body_of(event)
    assert body_of(event).startswith(b'{"created_at":')


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 0), (1, 1), (2, 2), (3, 4), (10, 512), (11, 600), (500, 600)],
)
def test_backoff_doubles_up_to_its_cap(attempts: int, seconds: float) -> None:
    assert backoff(attempts, base=1.0, cap=600.0) == timedelta(seconds=seconds)


def test_an_event_is_given_up_after_the_retry_period() -> None:
    day = timedelta(hours=24)
    assert not gives_up(NOW, NOW + day - timedelta(seconds=1), day)
    assert gives_up(NOW, NOW + day, day)
