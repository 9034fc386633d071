"""What a JSON-RPC batch needs beyond a single call: the calls waiting for their batch, and
the items of the node's answer, each with its own text as it came (a finalized transaction is
cached as the node sent it, batched or not). `core/chain/jsonrpc.py` sends the batches."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgspec

from core.chain.json_answers import VALUE, loads


@dataclass(slots=True)
class Call:
    """A call waiting for its batch: the caller awaits `answer`."""

    method: str
    params: list[Any] | None
    answer: asyncio.Future[tuple[Any, bytes]]

    def answer_with(self, value: tuple[Any, bytes]) -> None:
        if not self.answer.done():  # else its caller gave up
            self.answer.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if self.answer.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            self.answer.cancel()
        else:
            self.answer.set_exception(exc)


_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_RAW_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


def array_items(content: bytes) -> list[tuple[Any, bytes]] | None:
    """A JSON array's items, each with its own bytes as they came; None if `content` is not
    one non-empty JSON array. Through msgspec when it takes the text, as `loads`
    (`core/chain/json_answers.py`)."""
    try:
        raws = _RAW_ITEMS.decode(content)
        items = [(VALUE.decode(raw), bytes(raw)) for raw in raws]
    except msgspec.MsgspecError:
        return _array_items(content)
    return items or None  # an empty batch answer says nothing about any call


def _array_items(content: bytes) -> list[tuple[Any, bytes]] | None:
    """`array_items` by the standard library's decoder, item by item."""
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return None
    at = _SPACE.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("[", at):
        return None
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    items: list[tuple[Any, bytes]] = []
    if text.startswith("]", at):
        return None  # an empty batch answer says nothing about any call
    while True:
        try:
            item, end = _DECODER.raw_decode(text, at)
        except ValueError:
            return None
        items.append((item, text[at:end].encode()))
        at = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", at):
            at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        elif text.startswith("]", at):
            break
        else:
            return None
    return items if _SPACE.match(text, at + 1).end() == len(text) else None  # type: ignore[union-attr]


def transient_error(content: bytes, transient: Collection[int]) -> str | None:
    """The reason of one JSON-RPC error object answering a whole batch, if its code is one of
    `transient`."""
    try:
        answer = loads(content)
    except ValueError:
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and error.get("code") in transient:
        return f"JSON-RPC error {error.get('code')}: {error.get('message')}"
    return None


# Client errors that say the endpoint or its key is wrong, whatever was sent: not about batches.
NOT_ABOUT_BATCHES = frozenset({401, 404, 407})


def refusal(status: int, content: bytes) -> bool:
    """Whether a node said no to a batch as such: a client error other than 429 and
    `NOT_ABOUT_BATCHES` (a plan without batches, a batch too large), or one JSON-RPC error
    object instead of an array."""
    if not 200 <= status < 300:
        return status not in NOT_ABOUT_BATCHES
    try:
        answer = loads(content)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("error") is not None
