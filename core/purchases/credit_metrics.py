"""Group commit on /metrics, read from the process's `CreditGroups` at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.purchases.grouped import CreditGroups


class CreditGroupsCollector(Collector):
    """`payops_credits_in_flight` (purchase credits handed to the database and not answered
    yet), `payops_credit_groups_total` (transactions that committed several credits) and
    `payops_credits_grouped_total` (the credits they committed)."""

    def __init__(self, groups: CreditGroups) -> None:
        self._groups = groups

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        g = self._groups
        yield GaugeMetricFamily(
            "payops_credits_in_flight",
            "Purchase credits handed to the database and not answered yet",
            value=g.in_flight,
        )
        yield CounterMetricFamily(
            "payops_credit_groups",
            "Transactions that committed several purchase credits together",
            value=g.groups,
        )
        yield CounterMetricFamily(
            "payops_credits_grouped",
            "Purchase credits committed in a group",
            value=g.grouped,
        )
