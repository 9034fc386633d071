"""Prometheus metrics, one registry per `Services` (so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.verify_outcomes = Counter(
            "payops_verify_outcomes_total",
            "Verify calls by outcome and code",
            ["outcome", "code"],
            registry=self.registry,
        )
        self.credits_applied = Counter(
            "payops_credits_applied_total",
            "Credits applied by ledger transaction kind",
            ["kind"],
            registry=self.registry,
        )
        self.intents_created = Counter(
            "payops_intents_created_total", "Purchase intents created", registry=self.registry
        )
        self.http_requests = Counter(
            "payops_http_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "payops_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.gate_open = Gauge(
            "payops_gate_open", "1 when a gate switch is open", ["switch"], registry=self.registry
        )
