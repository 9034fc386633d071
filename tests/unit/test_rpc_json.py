"""The RPC client's JSON decoding (`core/chain/json_answers.py`, `core/chain/batch.py`):
msgspec's decoder where it takes the text, the standard library's answer always: the same
values, of the same types, and for what either refuses, the standard library's verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from core.chain.batch import _array_items, array_items
from core.chain.json_answers import loads

FIXTURES = Path(__file__).parent.parent / "fixtures" / "solana"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 5, max_value=2**64 + 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


def outcome(decode: Any, content: bytes) -> tuple[str, str]:
    """What decoding gives, to the type: repr tells 1, 1.0 and True apart, and -0.0."""
    try:
        return "value", repr(decode(content))
    except Exception as exc:
        return "error", type(exc).__name__


@given(json_values, st.booleans())
def test_a_value_decodes_as_the_standard_library_decodes_it(value: Any, ascii_only: bool) -> None:
    content = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(loads, content) == outcome(json.loads, content)


@given(st.binary(max_size=64) | st.text(max_size=32).map(lambda t: t.encode("utf-8", "replace")))
def test_any_bytes_decode_or_fail_as_with_the_standard_library(content: bytes) -> None:
    assert outcome(loads, content) == outcome(json.loads, content)


@given(st.lists(json_values, max_size=6), st.sampled_from(["", " ", "\n", "\t "]))
def test_a_batch_answer_splits_into_the_same_items_and_bytes(items: list[Any], space: str) -> None:
    sep = f"{space},{space}"
    content = f"{space}[{space}{sep.join(json.dumps(i) for i in items)}{space}]{space}".encode()
    assert outcome(array_items, content) == outcome(_array_items, content)
    found = array_items(content)
    if items:
        assert found is not None
        assert [raw for _, raw in found] == [json.dumps(i).encode() for i in items]
    else:
        assert found is None  # an empty batch answer says nothing about any call


@given(st.binary(max_size=64))
def test_garbage_is_no_batch_answer_either_way(content: bytes) -> None:
    assert outcome(array_items, content) == outcome(_array_items, content)


def test_the_captured_answers_decode_alike() -> None:
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 12
    for path in files:
        content = path.read_bytes()
        assert outcome(loads, content) == outcome(json.loads, content), path.name
    batch = b"[" + b",".join(f.read_bytes().strip() for f in files) + b"]"
    assert outcome(array_items, batch) == outcome(_array_items, batch)


def test_what_msgspec_refuses_gets_the_standard_librarys_answer() -> None:
    assert loads(b'"\\ud800"') == "\ud800"  # a lone surrogate
    assert loads(b"\xef\xbb\xbf[1]") == [1]  # a byte-order mark
    assert loads(json.dumps([7]).encode("utf-16")) == [7]
    assert array_items(b'[{"id": 1, "r": "\\ud800"}]') == [
        ({"id": 1, "r": "\ud800"}, b'{"id": 1, "r": "\\ud800"}')
    ]
