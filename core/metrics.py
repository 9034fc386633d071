"""Prometheus metrics, one registry per `Services` (so tests can build many)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._finding_kinds: set[str] = set()
        self._payments()
        self._http()
        self._reconciliation()
        self._jobs()
        self._watcher()
        self._webhooks()

    def _payments(self) -> None:
        """Intents, verifies and credits."""
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

    def _http(self) -> None:
        """The HTTP API and the verify gate."""
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
        # One request's two samples, by (route, method, status): `labels()` looks the child
        # up under a lock on every call; the children never change once made.
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.gate_open = Gauge(
            "payops_gate_open", "1 when a gate switch is open", ["switch"], registry=self.registry
        )
        # Reconciliation (set after every scheduled run) and the scheduled jobs.

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request and observe its latency."""
        children = self._http_children.get((route, method, status))
        if children is None:
            children = (
                self.http_requests.labels(route, method, str(status)),
                self.http_latency.labels(route),
            )
            self._http_children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def _reconciliation(self) -> None:
        """The latest reconciliation run."""
        self.recon_drift = Gauge(
            "payops_recon_drift",
            "Drift of the latest reconciliation run (expected minus applied)",
            ["unit"],
            registry=self.registry,
        )
        self.recon_open_findings = Gauge(
            "payops_recon_open_findings",
            "Open findings of the latest reconciliation run, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.recon_last_run = Gauge(
            "payops_recon_last_run_timestamp_seconds",
            "When the latest reconciliation run finished (Unix time)",
            registry=self.registry,
        )

    def _jobs(self) -> None:
        """Scheduled jobs and the recovery sweep."""
        self.job_runs = Counter(
            "payops_job_runs_total",
            "Scheduled job ticks on this replica by job and outcome (skipped: another "
            "replica ran the tick, or holds the job)",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "payops_job_run_seconds",
            "Duration of scheduled job runs",
            ["job"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
            registry=self.registry,
        )
        self.recovery_outcomes = Counter(
            "payops_recovery_outcomes_total",
            "Intents looked up by the recovery sweep, by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def _watcher(self) -> None:
        """The treasury watcher."""
        self.watch_flows = Counter(
            "payops_watch_flows_total",
            "Transactions the treasury watcher recorded as changing the treasury, by direction",
            ["direction"],
            registry=self.registry,
        )
        self.watch_polls = Counter(
            "payops_watch_polls_total",
            "Treasury watcher polls on this replica (stopped: ended early, see the logs)",
            ["outcome"],
            registry=self.registry,
        )
        self.watch_cursor_slot = Gauge(
            "payops_watch_cursor_slot",
            "Slot of the newest transaction the treasury watcher has recorded",
            registry=self.registry,
        )
        self.watch_detection = Histogram(
            "payops_watch_detection_seconds",
            "From a payment's block time to its credit by the treasury watcher",
            buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.watch_chain_slot = Gauge(
            "payops_watch_chain_slot",
            "The chain's slot at the commitment, as the treasury watcher last read it",
            registry=self.registry,
        )
        self.watch_last_poll = Gauge(
            "payops_watch_last_poll_timestamp_seconds",
            "When the treasury watcher last read the treasury's history to the newest signature",
            registry=self.registry,
        )

    def _webhooks(self) -> None:
        """Webhook delivery."""
        self.webhook_deliveries = Counter(
            "payops_webhook_deliveries_total",
            "Webhook delivery attempts by outcome (dead: given up after the retry period)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_outbox_depth = Gauge(
            "payops_webhook_outbox_depth",
            "Webhook deliveries not yet made (as the delivering replica last counted)",
            registry=self.registry,
        )

    def set_recon(
        self, *, drift_credits: int, drift_tokens: int, open_by_kind: dict[str, int], at: float
    ) -> None:
        """Publish a reconciliation run; kinds no longer open drop to 0 (not vanish)."""
        self.recon_drift.labels("credits").set(drift_credits)
        self.recon_drift.labels("tokens").set(drift_tokens)
        self._finding_kinds |= set(open_by_kind)
        for kind in self._finding_kinds:
            self.recon_open_findings.labels(kind).set(open_by_kind.get(kind, 0))
        self.recon_last_run.set(at)
