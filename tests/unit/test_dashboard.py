"""docs/grafana-dashboard.json: importable, and every metric it queries is one payops exports
(and every metric payops exports has a panel)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from core.chain.rpc import SolanaRpc
from core.chain.rpc_metrics import RpcCollector
from core.metrics import Metrics
from core.purchases import CreditGroups, CreditGroupsCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def exported() -> dict[str, str]:
    """Every sample name payops' registry can export -> its metric family (the RPC client's
    and group commit's included, registered as `payops serve` registers them)."""
    registry = Metrics().registry
    registry.register(RpcCollector(SolanaRpc("http://127.0.0.1:1/")))
    registry.register(CreditGroupsCollector(CreditGroups()))
    names = {}
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def test_the_dashboard_is_importable_with_a_prometheus_input(dashboard: dict[str, Any]) -> None:
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["id"] is None
    assert dashboard["uid"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert panel["targets"]
            assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])


def test_every_queried_metric_exists(dashboard: dict[str, Any]) -> None:
    known = exported().keys()
    queried = {m for e in exprs(dashboard) for m in re.findall(r"\bpayops_[a-z0-9_]+", e)}
    assert queried, "the dashboard queries payops metrics"
    assert queried <= known, f"unknown metrics: {sorted(queried - known)}"


def test_every_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    queried = {m for e in exprs(dashboard) for m in re.findall(r"\bpayops_[a-z0-9_]+", e)}
    names = exported()
    shown = {names[m] for m in queried if m in names}
    missing = set(names.values()) - shown
    assert not missing, f"add a panel to docs/grafana-dashboard.json for {sorted(missing)}"


def test_queries_are_balanced_and_filter_by_instance(dashboard: dict[str, Any]) -> None:
    for expr in exprs(dashboard):
        for left, right in ("()", "{}", "[]"):
            assert expr.count(left) == expr.count(right), expr
        assert 'instance=~"$instance"' in expr, expr
