"""`logs.info`, the access line's short way to payops' JSON handler: the same bytes as
`logger.info`, and `logging`'s own way whenever anything else would see the line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from core import logs
from core.logs import ContextFilter, JsonFormatter, TurnHandler


@pytest.fixture
def ours() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """`payops.test.fast` with payops' handler as the only one it reaches."""
    out = io.StringIO()
    handler = TurnHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("payops.test.fast")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, out
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_line_is_what_logger_info_writes(ours: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = ours
    fields = {"status": 200, "duration_ms": 1.25}
    with logs.bind(request_id="r-1", route="purchase-intents", status="not over a field"):
        logs.info(logger, "POST /v1/x 200", fields)
        logger.info("%s %s %s", "POST", "/v1/x", 200, extra=fields)
    fast, slow = out.getvalue().splitlines()
    # the same keys in the same order, the same values; only the clock may differ
    assert list(json.loads(fast)) == list(json.loads(slow))
    assert {**json.loads(fast), "ts": ""} == {**json.loads(slow), "ts": ""}
    assert json.loads(fast)["status"] == 200  # a field wins over a bound name, as in logging
    assert list(json.loads(fast))[:6] == ["ts", "level", "logger", "msg", "status", "duration_ms"]


async def test_in_the_loop_the_line_waits_for_the_turn_like_any_other(
    ours: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = ours
    logger.info("first")
    logs.info(logger, "second", {})
    assert out.getvalue() == ""  # queued for the end of this turn, in order
    await asyncio.sleep(0)
    assert [line["msg"] for line in lines(out)] == ["first", "second"]


def test_another_handler_gets_the_line_through_logging(
    ours: tuple[logging.Logger, io.StringIO], caplog: pytest.LogCaptureFixture
) -> None:
    logger, out = ours
    logger.propagate = True  # the root logger holds pytest's capture handler
    with caplog.at_level(logging.INFO, logger="payops.test.fast"):
        logger.info("%s", "GET /healthz 200", extra={"status": 200})
        through_logging = [(r.getMessage(), r.status) for r in caplog.records]  # type: ignore[attr-defined]
        caplog.clear()
        logs.info(logger, "GET /healthz 200", {"status": 200})
        fast = [(r.getMessage(), r.status) for r in caplog.records]  # type: ignore[attr-defined]
    assert fast == through_logging
    assert ("GET /healthz 200", 200) in fast
    assert [line["msg"] for line in lines(out)] == ["GET /healthz 200"] * 2


def test_a_filter_on_the_logger_is_honoured(ours: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = ours
    drop = logging.Filter("elsewhere")  # passes only records of another logger
    logger.addFilter(drop)
    try:
        logs.info(logger, "dropped", {})
    finally:
        logger.removeFilter(drop)
    assert out.getvalue() == ""


def test_a_level_above_info_writes_nothing(ours: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = ours
    logger.setLevel(logging.WARNING)
    logs.info(logger, "quiet", {"status": 200})
    logger.setLevel(logging.INFO)
    logger.handlers[0].setLevel(logging.WARNING)
    logs.info(logger, "quiet too", {"status": 200})
    assert out.getvalue() == ""
