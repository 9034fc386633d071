"""The pure parts of a verify without a signature: which signatures count, in which order, how
the node's history is paged, and how lookups of one intent are coalesced."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.purchases import Flights, payments_oldest_first, reference_payments


def rec(signature: str, err: object = None) -> dict[str, Any]:
    return {"signature": signature, "err": err, "slot": 1}


@pytest.mark.parametrize(
    ("pages", "expected"),
    [
        ([], []),
        ([[]], []),
        ([[rec("c"), rec("b"), rec("a")]], ["a", "b", "c"]),
        ([[rec("c"), rec("b", {"InstructionError": [0, 1]}), rec("a")]], ["a", "c"]),
        ([[rec("d"), rec("c")], [rec("b"), rec("a")]], ["a", "b", "c", "d"]),
        ([[rec("b"), rec("a")], [rec("a")]], ["a", "b"]),  # a page repeating one: once
        ([[{"err": None}, rec("a")]], ["a"]),  # a record without a signature
    ],
    ids=["none", "empty page", "newest first", "failed skipped", "two pages", "repeat", "no sig"],
)
def test_payments_are_successful_signatures_oldest_first(
    pages: list[list[dict[str, Any]]], expected: list[str]
) -> None:
    assert payments_oldest_first(pages) == expected


class History:
    """A node's getSignaturesForAddress over `signatures` (newest first), honouring `before`
    unless told not to."""

    def __init__(self, signatures: list[str], *, honour_before: bool = True) -> None:
        self.signatures = signatures
        self.honour_before = honour_before
        self.calls: list[str | None] = []

    async def get_signatures_for_address(
        self,
        address: str,
        limit: int | None = None,
        before: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        self.calls.append(before)
        start = 0
        if before is not None and self.honour_before:
            start = self.signatures.index(before) + 1
        return [rec(s) for s in self.signatures[start : start + (limit or 1000)]]


async def test_reference_payments_pages_back_through_every_signature() -> None:
    node = History([f"s{i}" for i in range(7, 0, -1)])  # s7 newest ... s1 oldest
    found = await reference_payments(node, "ref", page=2)
    assert found == [f"s{i}" for i in range(1, 8)]
    assert node.calls == [None, "s6", "s4", "s2"]


async def test_reference_payments_stops_when_a_node_ignores_before() -> None:
    node = History(["s2", "s1"], honour_before=False)
    assert await reference_payments(node, "ref", page=2) == ["s1", "s2"]
    assert len(node.calls) == 2


async def test_flights_share_one_run_per_key_and_its_answer() -> None:
    flights: Flights[str, int] = Flights()
    runs = 0
    release = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        return runs

    waiting = [asyncio.create_task(flights.run("intent", work)) for _ in range(10)]
    other = asyncio.create_task(flights.run("other", work))
    await asyncio.sleep(0)
    assert flights.in_flight() == 2
    release.set()
    assert set(await asyncio.gather(*waiting)) == {1}
    assert await other == 2
    assert flights.in_flight() == 0
    assert await flights.run("intent", work) == 3  # landed: the next caller runs anew


async def test_flights_hand_every_caller_the_exception() -> None:
    flights: Flights[str, int] = Flights()

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("chain says no")

    results = await asyncio.gather(
        *(flights.run("k", fails) for _ in range(3)), return_exceptions=True
    )
    assert [type(r) for r in results] == [ValueError] * 3


async def test_a_caller_going_away_does_not_cancel_the_others() -> None:
    flights: Flights[str, str] = Flights()

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.create_task(flights.run("k", slow))
    second = asyncio.create_task(flights.run("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "done"
