"""Parsing what people type and what buttons carry: ASCII only.

`str.isdigit()` accepts `²` and other Unicode digits that `int()` then refuses (or reads
as another number: Arabic-Indic ones), so ids are matched against ASCII digits and a length
that fits a PostgreSQL bigint.
"""

from __future__ import annotations

import re

_ID = re.compile(r"[0-9]{1,18}")


def parse_id(text: str) -> int | None:
    """A positive database id written in ASCII digits, or None."""
    if not _ID.fullmatch(text):
        return None
    value = int(text)
    return value if value > 0 else None
