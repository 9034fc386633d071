"""The perf run's command line and its `Config`: the concurrencies, the measured window of
each slice, the sizes of the duplicate bursts and of the triage history, the CPU the load
generators are pinned to, where results and work go, and `say`, the run's timestamped
progress line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# `--help`'s description: the first line of `bench.perf`'s docstring.
DESCRIPTION = (
    "Verify throughput and latency against PostgreSQL's own limit, on one machine, in one run."
)


@dataclass(frozen=True)
class Config:
    quick: bool
    levels: tuple[int, ...]
    warmup: float
    duration: float
    users: int
    duplicates: int
    triage_intents: int
    triage_per_kind: int
    client_cpu: int | None
    out_dir: Path
    work_dir: Path | None
    keep: bool
    profile: bool
    rounds: int
    uvloop: bool
    workers: int = 2  # `payops serve --workers N` against one worker, same run (1: skip)
    watch_payments: int = 1000  # payments the treasury watcher detects and credits (0: skip)
    # Intents prepared per second of run: pgbench's pool is sized from these caps, every
    # other mode's from the pgbench rate just measured at the same concurrency.
    pgbench_cap: dict[int, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.warmup + self.duration


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=DESCRIPTION)
    p.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    p.add_argument("--levels", default="1,16,64", help="concurrencies (default 1,16,64)")
    p.add_argument("--duration", type=float, help="measured seconds per slice (3; quick 0.7)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds first (1; quick 0.5)")
    p.add_argument("--users", type=int, default=1000, help="users owning the intents")
    p.add_argument("--duplicates", type=int, help="concurrent duplicate verifies (1000; quick 250)")
    p.add_argument("--triage-intents", type=int, help="intents for triage (1e6; quick 1e4)")
    p.add_argument("--client-cpu", type=int, help="CPU for the clients (default: the last)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--work-dir", type=Path, help="where PostgreSQL and logs go (default: tmp)")
    p.add_argument("--rounds", type=int, help="interleaved slices per mode and level (3; quick 1)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the event loop of the service, the ceiling and the core path (default uvloop,"
        " the service's default)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the service with py-spy during each end-to-end run (<out>/profile-*.txt, "
        "summed by part in <out>/profile-shares.md)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also compare payops serve --workers N with one worker (default 2; 1 skips it)",
    )
    p.add_argument(
        "--watch-payments",
        type=int,
        help="payments the treasury watcher detects and credits with no request, its CPU per "
        "payment beside the verify's (1000; quick 200; 0 skips it)",
    )
    a = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu = a.client_cpu if a.client_cpu is not None else cpus[-1]
    quick = bool(a.quick)
    return Config(
        quick=quick,
        levels=tuple(int(x) for x in a.levels.split(",")),
        warmup=a.warmup if a.warmup is not None else (0.5 if quick else 1.0),
        duration=a.duration if a.duration is not None else (0.7 if quick else 3.0),
        users=a.users,
        duplicates=a.duplicates or (250 if quick else 1000),
        triage_intents=a.triage_intents or (10_000 if quick else 1_000_000),
        triage_per_kind=20 if quick else 100,
        client_cpu=client_cpu if len(cpus) > 1 else None,
        out_dir=a.out,
        work_dir=a.work_dir,
        keep=a.keep,
        profile=a.profile,
        rounds=a.rounds or (1 if quick else 3),
        uvloop=a.event_loop == "uvloop",
        workers=a.workers,
        watch_payments=(
            a.watch_payments if a.watch_payments is not None else (200 if quick else 1000)
        ),
        pgbench_cap={1: 2000},
    )


def say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)
