"""Throughput and latency of one measured run, computed the same way for every mode.

Every client (pgbench's per-transaction log, the HTTP load generator, the core-path runner)
hands over one `(start, end, ok)` record per transaction, in seconds on its own clock. A run
is summarised over the same window: from `warmup` seconds after its first start until its
deadline (`first start + warmup + duration`). Throughput counts the transactions that ended
inside the window; latencies are those of the transactions that started inside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Record = tuple[float, float, bool]  # start, end (seconds), succeeded


@dataclass(frozen=True, slots=True)
class RunStats:
    throughput: float  # successful transactions per second in the window
    count: int  # transactions started in the window
    errors: int  # of those, how many failed
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    window_s: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in latencies_s)
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3) if ms else 0.0,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else 0.0,
    }


def summarise(records: Sequence[Record], *, warmup: float, duration: float) -> RunStats:
    """The run's statistics over its measurement window (see the module docstring)."""
    if not records:
        return RunStats(0.0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    first = min(r[0] for r in records)
    begin = first + warmup
    deadline = begin + duration
    last_end = max(r[1] for r in records)
    # A run that ran out of work early is measured up to its last answer.
    end = min(deadline, last_end)
    window = max(end - begin, 1e-9)
    done = sum(1 for s, e, ok in records if ok and begin <= e <= end)
    started = [r for r in records if begin <= r[0] < end]
    ms = sorted((e - s) * 1000 for s, e, _ in started)
    return RunStats(
        throughput=done / window,
        count=len(started),
        errors=sum(1 for r in started if not r[2]),
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1] if ms else 0.0,
        mean_ms=sum(ms) / len(ms) if ms else 0.0,
        window_s=window,
    )


def summarise_rounds(
    rounds: Sequence[Sequence[Record]], *, warmup: float, duration: float
) -> RunStats:
    """Several slices of one mode as one run: transactions and window time add up, and the
    latencies are pooled."""
    done = 0.0
    window = 0.0
    errors = 0
    ms: list[float] = []
    for records in rounds:
        if not records:
            continue
        stats = summarise(records, warmup=warmup, duration=duration)
        done += stats.throughput * stats.window_s
        window += stats.window_s
        errors += stats.errors
        first = min(r[0] for r in records) + warmup
        end = first + stats.window_s
        ms += [(e - s) * 1000 for s, e, _ in records if first <= s < end]
    ms.sort()
    return RunStats(
        throughput=done / window if window else 0.0,
        count=len(ms),
        errors=errors,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1] if ms else 0.0,
        mean_ms=sum(ms) / len(ms) if ms else 0.0,
        window_s=window,
    )


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator > 0 else None
