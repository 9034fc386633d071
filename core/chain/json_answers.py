"""The node's answers as JSON: msgspec's decoder where it takes the text, the standard
library's answer always."""

from __future__ import annotations

import json
from typing import Any

import msgspec

VALUE = msgspec.json.Decoder()  # any JSON value, built once


def loads(content: bytes) -> Any:
    """`json.loads(content)`, through msgspec's decoder (several times faster on a node's
    answers) when it takes the text. What it refuses (a lone surrogate, a byte-order mark,
    UTF-16, an integer of over 4,300 digits, anything malformed) goes to `json.loads`,
    whose value or error stands: the answer is always the standard library's
    (tests/unit/test_rpc_json.py)."""
    try:
        return VALUE.decode(content)
    except msgspec.MsgspecError:
        return json.loads(content)
