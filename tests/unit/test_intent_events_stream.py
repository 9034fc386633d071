"""The pure parts of the intent event stream: the SSE wire format and the in-process fan-out of
notifications (no database: the LISTEN connection is never opened here)."""

from __future__ import annotations

import asyncio

from api.routes_events import KEEP_ALIVE, sse
from core.notify import Notifications, Subscription


def test_an_event_is_its_name_its_data_lines_and_a_blank_line() -> None:
    assert sse("status", '{"a":1}') == b'event: status\ndata: {"a":1}\n\n'
    assert sse("status", "one\ntwo") == b"event: status\ndata: one\ndata: two\n\n"
    assert KEEP_ALIVE.startswith(b":")  # a comment: EventSource ignores it
    assert KEEP_ALIVE.endswith(b"\n\n")


async def test_a_subscription_wait_is_true_only_when_woken() -> None:
    sub = Subscription("k")
    assert await sub.wait(0.01) is False
    sub.wake()
    assert await sub.wait(0.01) is True
    assert await sub.wait(0.01) is False  # the wake-up was used up


class _NeverListens(Notifications):
    """The fan-out alone: subscribing does not open the LISTEN connection."""

    def __init__(self) -> None:
        super().__init__(pool=None)  # type: ignore[arg-type]
        self._task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]


async def test_a_notification_wakes_only_that_intents_subscribers() -> None:
    hub = _NeverListens()
    with hub.subscribe("i1") as a, hub.subscribe("i1") as b, hub.subscribe("i2") as c:
        assert hub.subscribers() == 3
        hub.dispatch("i1")
        assert await a.wait(0.01)
        assert await b.wait(0.01)
        assert await c.wait(0.01) is False
        hub.dispatch("unknown")  # nobody waits for it: nothing happens
    assert hub.subscribers() == 0


async def test_reconnecting_or_closing_wakes_everyone() -> None:
    hub = _NeverListens()
    with hub.subscribe("i1") as a, hub.subscribe("i2") as b:
        hub.wake_all()
        assert await a.wait(0.01)
        assert await b.wait(0.01)
    hub._task = None
    await hub.close()
    assert hub.closed
    with hub.subscribe("i3") as late:
        assert await late.wait(0.01)  # closed: a new subscriber is told at once
