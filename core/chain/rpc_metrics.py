"""Solana RPC counters on /metrics, read from the client's own stats at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from core.chain.rpc import SolanaRpc


class RpcCollector(Collector):
    """`payops_rpc_requests_total{method}` (calls sent, each attempt counted, batched or not),
    `payops_rpc_batches_total` (HTTP requests that carried several calls) and
    `payops_rpc_errors_total{method, reason}` (calls that ended unavailable after their
    retries)."""

    def __init__(self, rpc: SolanaRpc) -> None:
        self._rpc = rpc

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._rpc.stats
        requests = CounterMetricFamily(
            "payops_rpc_requests", "Solana RPC calls sent (attempts) by method", labels=["method"]
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
        batches = CounterMetricFamily(
            "payops_rpc_batches", "Solana RPC HTTP requests that carried several calls"
        )
        batches.add_metric([], stats.batches)
        yield requests
        yield batches
        yield errors
