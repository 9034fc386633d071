"""`/pay-webhooks` arguments and lines, as pure functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bot.commands.webhooks import LIST_LIMIT, delivery_line, list_reply, parse_event_id, parse_since
from core.errors import InvalidInput
from core.webhooks import Delivery, Event

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("1d", NOW - timedelta(days=1)),
        (" 30D ", NOW - timedelta(days=30)),
        ("2026-11-26T10:00Z", datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),
        ("2026-11-26T10:00", datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),
        ("2026-11-26T11:00+01:00", datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),
        ("2026-11-26T12:00Z", NOW),
    ],
)
def test_since_reads_relative_and_iso_times(text: str, since: datetime) -> None:
    assert parse_since(text, NOW) == since


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "cannot read"),
        ("yesterday", "cannot read"),
        ("2w", "cannot read"),
        ("-2h", "cannot read"),
        ("31d", "more than 30 days"),
        ("99999d", "more than 30 days"),
        ("2026-10-01T00:00Z", "more than 30 days"),
        ("2026-11-26T12:01Z", "in the future"),
    ],
)
def test_since_refuses_what_it_cannot_use(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as caught:
        parse_since(text, NOW)
    assert caught.value.code == "invalid_since"


def test_event_ids_are_uuids() -> None:
    uid = uuid.uuid4()
    assert parse_event_id(str(uid)) == uid
    with pytest.raises(InvalidInput) as caught:
        parse_event_id("12345")
    assert caught.value.code == "invalid_event_id"


def _delivery(n: int, status: str = "pending") -> Delivery:
    event = Event(uuid.UUID(int=n), n, "intent.confirmed", f"intent:{n}", {}, NOW)
    return Delivery(event, "https://rx.example/hooks", status, 3, NOW, "HTTP 503")


def test_a_line_shows_the_next_attempt_only_while_pending() -> None:
    assert "next=2026-11-26 12:00:00 UTC" in delivery_line(_delivery(1))
    assert "next=- error=HTTP 503" in delivery_line(_delivery(1, "dead"))


def test_the_list_is_bounded_and_says_so() -> None:
    found = [_delivery(n) for n in range(LIST_LIMIT + 1)]
    reply = list_reply(found, {"dead": 0, "pending": LIST_LIMIT + 1, "delivered": 0}, "")
    assert f"{LIST_LIMIT} shown" in reply.text
    assert str(uuid.UUID(int=LIST_LIMIT)) not in reply.text
    assert "more: narrow with --since" in reply.text
    assert "more:" not in list_reply(found[:1], {"pending": 1}, "").text
