"""Solana RPC counters on /metrics, read from the client's own stats at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from core.chain.rpc import SolanaRpc


class RpcCollector(Collector):
    """`payops_rpc_requests_total{method}` (HTTP attempts) and `payops_rpc_errors_total{method,
    reason}` (calls that ended unavailable after their retries)."""

    def __init__(self, rpc: SolanaRpc) -> None:
        self._rpc = rpc

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._rpc.stats
        requests = CounterMetricFamily(
            "payops_rpc_requests", "Solana RPC HTTP attempts by method", labels=["method"]
        )
        for method, n in sorted(stats.requests.items()):
            requests.add_metric([method], n)
        errors = CounterMetricFamily(
            "payops_rpc_errors",
            "Solana RPC calls that stayed unavailable after retries",
            labels=["method", "reason"],
        )
        for method, n in sorted(stats.failures.items()):
            errors.add_metric([method, "unavailable"], n)
        yield requests
        yield errors
