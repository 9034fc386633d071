"""The scripted JSON-RPC node and RPC clients on it, for the RPC client's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.chain.rpc import SolanaRpc
from tests.fake_node import FAST, FakeNode, running_node

MakeRpc = Callable[..., SolanaRpc]


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    async with running_node() as served:
        yield served


@pytest.fixture
async def make_rpc(node: FakeNode) -> AsyncIterator[MakeRpc]:
    """`SolanaRpc`s on `node` with short timeouts and backoffs (`FAST`), closed at the end."""
    made: list[SolanaRpc] = []

    def make(**overrides: Any) -> SolanaRpc:
        rpc = SolanaRpc(**{"url": node.url, **FAST, **overrides})
        made.append(rpc)
        return rpc

    yield make
    for rpc in made:
        await rpc.close()
