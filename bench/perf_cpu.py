"""What a benchmark run measures of each process: CPU per transaction by side (the bench
process, its reaped clients, the service and the ceiling with their kernel part, the whole
PostgreSQL server), read from /proc, and memory (VmRSS, VmHWM)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak RSS since start) of a process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


# --- CPU accounting --------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, *, children: bool = False, system_only: bool = False) -> float:
    """User + system CPU of a process (and of its reaped children), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    # after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    used = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[14]) if system_only else int(fields[13]) + int(fields[14])
    return used / _TICK


def children_of(parent: int) -> list[int]:
    """The live child processes of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """A process and its live children (`payops serve --workers`: the parent and its
    workers), with its reaped children."""
    total = _cpu_seconds(pid, children=True, system_only=system_only)
    for child in children_of(pid):
        total += _cpu_seconds(child, system_only=system_only)
    return total


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU of the whole PostgreSQL server: the postmaster with its reaped children (exited
    backends) and every live child (backends, WAL writer, checkpointer, autovacuum)."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return tree_cpu_seconds(postmaster)


@dataclass
class CpuMeter:
    """CPU used during a run by each side: this process (the core-path runner and the local
    chain), the client processes it started and reaped (pgbench, the load generator), the
    service, the ceiling (and the part of theirs spent in the kernel) and PostgreSQL."""

    pgdata: Path
    pids: dict[str, int]

    def snapshot(self) -> dict[str, float]:
        me = os.times()
        snap = {
            "bench_process": me.user + me.system,
            "clients": me.children_user + me.children_system,
            "postgres": postgres_cpu_seconds(self.pgdata),
        }
        for name, pid in self.pids.items():
            snap[name] = tree_cpu_seconds(pid)
            snap[f"{name}_kernel"] = tree_cpu_seconds(pid, system_only=True)
        return snap

    @staticmethod
    def per_transaction(
        before: dict[str, float], after: dict[str, float], transactions: int
    ) -> dict[str, float]:
        """CPU milliseconds per transaction, by side."""
        n = max(transactions, 1)
        return {k: round((after[k] - before[k]) * 1000 / n, 3) for k in before}
