"""The JSON log line's timestamp, formatted once per second, reads as datetime would write it."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from core.logs import JsonFormatter


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_the_timestamp_is_datetimes_isoformat_to_the_millisecond(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert JsonFormatter()._timestamp(created) == expected


def test_lines_in_one_second_share_its_prefix_and_keep_their_milliseconds() -> None:
    formatter = JsonFormatter()
    stamps = [formatter._timestamp(1764754200 + f) for f in (0.0, 0.0004, 0.9995, 0.5, 1.25)]
    assert stamps == [
        "2025-12-03T09:30:00.000+00:00",
        "2025-12-03T09:30:00.000+00:00",
        "2025-12-03T09:30:00.999+00:00",
        "2025-12-03T09:30:00.500+00:00",
        "2025-12-03T09:30:01.250+00:00",
    ]


def test_a_record_becomes_one_json_object_with_its_extra_fields() -> None:
    record = logging.LogRecord(
        "payops.http", logging.INFO, __file__, 1, "%s %s", ("GET", 200), None
    )
    record.status = 200
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "GET 200"
    assert (line["level"], line["logger"], line["status"]) == ("info", "payops.http", 200)
    assert line["ts"] == datetime.fromtimestamp(record.created, UTC).isoformat(
        timespec="milliseconds"
    )
