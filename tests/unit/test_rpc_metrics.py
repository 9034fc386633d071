"""RPC requests and errors reach /metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from core.chain.rpc import RpcUnavailable, SolanaRpc
from core.chain.rpc_metrics import RpcCollector
from tests.fake_node import OTHER_SIG, SIG, Reply, refused_url, running_node


async def test_failed_rpc_calls_are_counted_on_metrics() -> None:
    rpc = SolanaRpc(
        refused_url(), max_retries=1, backoff_base_seconds=0.01, backoff_cap_seconds=0.02
    )
    registry = CollectorRegistry()
    registry.register(RpcCollector(rpc))
    try:
        with pytest.raises(RpcUnavailable):
            await rpc.get_transaction(SIG)
    finally:
        await rpc.close()
    text = generate_latest(registry).decode()
    assert 'payops_rpc_errors_total{method="getTransaction",reason="unavailable"} 1.0' in text
    assert 'payops_rpc_requests_total{method="getTransaction"} 2.0' in text


async def test_batches_are_counted_on_metrics() -> None:
    async with running_node() as node:
        node.script = [Reply(result=None), Reply(result=None)]
        rpc = SolanaRpc(node.url, max_batch=10)
        registry = CollectorRegistry()
        registry.register(RpcCollector(rpc))
        try:
            await asyncio.gather(rpc.get_transaction(SIG), rpc.get_transaction(OTHER_SIG))
        finally:
            await rpc.close()
    text = generate_latest(registry).decode()
    assert "payops_rpc_batches_total 1.0" in text
    assert 'payops_rpc_requests_total{method="getTransaction"} 2.0' in text
