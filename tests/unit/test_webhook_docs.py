"""docs/WEBHOOKS.md cannot drift: its receiver example runs against `core.webhooks.sign`, and
it names every event type and every `data` field payops writes."""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.webhooks import sign

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "WEBHOOKS.md").read_text()
MIGRATION = (ROOT / "core" / "migrations" / "0009_webhooks.sql").read_text()
DEBITS = (ROOT / "core" / "ledger" / "debits.py").read_text()
SECRET = b"whsec-docs-0123456789abcdef"
BODY = b'{"data":{"credits":5},"id":"e1","type":"intent.confirmed"}'


def example() -> str:
    """The first Python block under "Checking the signature"."""
    section = DOC.split("## Checking the signature", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no ```python block under 'Checking the signature'"
    return match[1]


@pytest.fixture(scope="module")
def verify() -> Callable[..., bool]:
    namespace: dict[str, object] = {}
    exec(compile(example(), "docs/WEBHOOKS.md", "exec"), namespace)  # noqa: S102 (our own doc)
    found = namespace["verify"]
    assert callable(found)
    return found  # type: ignore[return-value]


def test_the_example_uses_only_the_standard_library_and_stays_short() -> None:
    imported = set()
    for node in ast.walk(ast.parse(example())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= {"hashlib", "hmac", "time"}
    assert len([line for line in example().splitlines() if line.strip()]) <= 16


def test_the_example_accepts_what_payops_signs(verify: Callable[..., bool]) -> None:
    now = int(time.time())
    assert verify(sign(SECRET, now, BODY), BODY, SECRET)
    assert verify(sign(SECRET, now - 240, BODY), BODY, SECRET)  # within five minutes


def test_the_example_refuses_a_tampered_body(verify: Callable[..., bool]) -> None:
    header = sign(SECRET, int(time.time()), BODY)
    assert not verify(header, BODY.replace(b"5", b"50"), SECRET)
    assert not verify(header, BODY, b"another-secret-0123456789")


@pytest.mark.parametrize("age", [360, 3600, -360])
def test_the_example_refuses_a_timestamp_out_of_tolerance(
    verify: Callable[..., bool], age: int
) -> None:
    assert not verify(sign(SECRET, int(time.time()) - age, BODY), BODY, SECRET)


@pytest.mark.parametrize(
    "header", ["", "v1=00", "t=abc,v1=00", "t=1,t=2,v1=00", "t=\u00b2,v1=00", "garbage"]
)
def test_the_example_refuses_malformed_headers(verify: Callable[..., bool], header: str) -> None:
    assert not verify(header, BODY, SECRET)


def _event_types() -> list[str]:
    check = re.search(r"type\s+text NOT NULL CHECK \(type IN \((.*?)\)\)", MIGRATION, re.DOTALL)
    assert check
    return re.findall(r"'([a-z.]+)'", check[1])


def _data_fields() -> set[str]:
    objects = re.findall(r"jsonb_build_object\((.*?)\)\);", MIGRATION, re.DOTALL)
    assert len(objects) == 3
    fields = {key for o in objects for key in re.findall(r"'(\w+)',\s*NEW\.", o)}
    debit = DEBITS.split('"credits.debited"', 1)[1].split("audit.record", 1)[0]
    return fields | set(re.findall(r'"(\w+)":', debit))


def test_every_event_type_has_a_heading() -> None:
    types = _event_types()
    assert len(types) == 6
    headings = " ".join(re.findall(r"^### (.*)$", DOC, re.MULTILINE))
    for type_ in types:
        assert f"`{type_}`" in headings, type_


def test_every_data_field_is_documented() -> None:
    fields = _data_fields()
    assert {"intent_id", "reject_code", "reason", "drift_tokens"} <= fields
    for name in fields:
        assert f"| `{name}` |" in DOC, name
