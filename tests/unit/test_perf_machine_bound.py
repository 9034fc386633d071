"""The bench's bound on what more workers can give: every CPU busy at one worker's cost."""

from __future__ import annotations

import pytest

from bench import perf, perf_report


def test_the_bound_is_the_cpus_over_every_process_cost_per_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(perf.os, "sched_getaffinity", lambda _pid: {0, 1})
    single = {
        "throughput": 1300.0,
        "cpu_ms_per_tx": {
            "bench_process": 0.15,
            "clients": 0.12,
            "postgres": 0.48,
            "service": 0.40,
            "service_kernel": 0.05,  # part of `service`, not counted twice
            "ceiling": 0.0,
            "ceiling_kernel": 0.0,
        },
    }
    bound = perf.machine_bound(single)
    assert bound["cpu_ms_per_verify"] == pytest.approx(1.15)
    assert bound["verifies_per_s_at_most"] == pytest.approx(2000 / 1.15, abs=0.1)
    assert bound["throughput_ratio_at_most"] == pytest.approx(2000 / 1.15 / 1300, abs=1e-3)
    assert bound["cpus_busy_with_one_worker"] == pytest.approx(1.3 * 1.15, abs=0.01)


def test_the_report_says_the_bound_beside_the_workers_figures() -> None:
    side = {"throughput": 1300.0, "p99_ms": 20.0, "cpu_ms_per_tx": {"service": 0.4}}
    result = {
        "started_at": "2026-12-03T00:00:00+00:00",
        "command": "python -m bench.perf",
        "elapsed_s": 1.0,
        "workers": {
            "clients": 16,
            "workers": 2,
            "one": side,
            "many": side,
            "throughput_ratio": 1.0,
            "service_cpu_ratio": 1.0,
            "machine_bound": {
                "cpus": 2,
                "cpu_ms_per_verify": 1.15,
                "cpus_busy_with_one_worker": 1.5,
                "verifies_per_s_at_most": 1739.1,
                "throughput_ratio_at_most": 1.338,
            },
        },
    }
    text = perf_report.markdown(result)
    assert "give at most 1,739/s, x1.34 one worker's rate" in text
