"""RPC requests and errors reach /metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from core.chain.rpc import RpcUnavailable, SolanaRpc
from core.chain.rpc_metrics import RpcCollector
from tests.fake_node import SIG, refused_url


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
