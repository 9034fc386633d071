"""`python -m bench.detect`'s figures: one phase's summary (lags, RPC requests per credited
payment, polls per second) and the table printed at the end."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.detect import Config, Phase


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summarize(cfg: Config, phase: Phase, credited: int, settings: dict[str, str]) -> dict[str, Any]:
    lags = phase.lags()
    total = sum(phase.rpc.values())
    polls = phase.rpc.get("getSignaturesForAddress", 0)
    window = phase.paying_seconds + phase.waited_seconds
    return {
        "phase": phase.name,
        "settings": settings,
        "payments": len(phase.owner),
        "landed": len(phase.landed),
        "send_errors": phase.send_errors,
        "confirmed_seen": len(phase.seen),
        "credited": credited,
        "still_pending": len(phase.landed) - len(phase.seen),
        "paying_seconds": round(phase.paying_seconds, 2),
        "waited_after_seconds": round(phase.waited_seconds, 2),
        "lag_seconds": {
            "p50": _round(percentile(lags, 50)),
            "p99": _round(percentile(lags, 99)),
            "max": _round(max(lags) if lags else None),
            "min": _round(min(lags) if lags else None),
        },
        "rpc_requests": dict(sorted(phase.rpc.items())),
        "rpc_requests_total": total,
        "rpc_requests_per_credited": _round(total / credited) if credited else None,
        "rpc_requests_per_credited_without_polls": (
            _round((total - polls) / credited) if credited else None
        ),
        "polls_per_second": _round(polls / window) if window else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def table(report: dict[str, Any]) -> str:
    rows = [
        ("payments landed", "landed"),
        ("confirmed, seen by a client", "confirmed_seen"),
        ("credited", "credited"),
        ("still PENDING at the end", "still_pending"),
        ("waited after the last payment (s)", "waited_after_seconds"),
    ]
    phases = report["phases"]
    width = 40
    lines = [f"{'':{width}}" + "".join(f"{p['phase']:>14}" for p in phases)]
    for label, key in rows:
        lines.append(f"{label:{width}}" + "".join(f"{p[key]!s:>14}" for p in phases))
    for q in ("p50", "p99", "max"):
        lines.append(
            f"{'lag landing -> CONFIRMED ' + q + ' (s)':{width}}"
            + "".join(f"{p['lag_seconds'][q]!s:>14}" for p in phases)
        )
    for label, key in (
        ("RPC requests", "rpc_requests_total"),
        ("RPC requests per credited payment", "rpc_requests_per_credited"),
        ("  of them not polling", "rpc_requests_per_credited_without_polls"),
        ("polls (getSignaturesForAddress) per s", "polls_per_second"),
    ):
        lines.append(f"{label:{width}}" + "".join(f"{p[key]!s:>14}" for p in phases))
    return "\n".join(lines)
