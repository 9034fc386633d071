"""Where the service's samples go, by part of the verify: py-spy's collapsed stacks summed.

    python -m bench.profile_shares <out>/profile-e2e-c16-r*.txt [--cpu-ms 0.65]

`python -m bench.perf --profile` writes py-spy's raw (collapsed) stacks, one line per distinct
stack with its sample count. Each sample goes to the part of the service that was running:
the innermost frame of the stack that belongs to a part decides (the standard library, the
interpreter and native frames belong to whoever called them: `json` decoding an RPC answer is
the RPC exchange, `json` reading a request body is the request's). Parts marked *shared* are
work the bare handler (`bench/perf_ceiling.py`) does too: its HTTP server, its database
driver, its event loop. The rest is the verify's own: what the issue's "service CPU per
verify ÷ the ceiling's" measures. `bench.perf --profile` records the bare handler's slices
too (`profile-ceiling-c<clients>-r<round>.txt`), so each shared part can be set beside its
cost there.

With `--cpu-ms` (the service's CPU per transaction in the same run), each share is also
given in milliseconds.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OTHER = "other (startup, unknown)"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    shared: bool  # the bare handler does this work too
    files: tuple[str, ...]  # path fragments of the frames that belong to it


RPC = Part(
    "RPC exchange",
    False,
    (
        "aiohttp/client",
        "aiohappyeyeballs",
        "core/chain/jsonrpc.py",
        "core/chain/batch.py",
        "core/chain/rpc.py",
        "core/chain/rpc_metrics.py",
    ),
)
HTTP_SERVER = Part("HTTP server (aiohttp)", True, ("aiohttp/", "multidict/", "yarl/"))

# Innermost match wins; the first part listing a fragment owns it.
PARTS = (
    RPC,
    Part("chain rules", False, ("core/chain/",)),
    Part("database driver (asyncpg)", True, ("asyncpg/",)),
    Part(
        "verify and credit (payops)",
        False,
        ("core/purchases/", "core/ledger/", "core/gate.py", "core/audit.py", "core/services.py"),
    ),
    Part("access line and logs", False, ("core/logs.py",)),
    Part("metrics", False, ("prometheus_client/", "core/metrics.py")),
    Part("request and response bodies", False, ("api/http.py", "api/schemas.py", "pydantic")),
    Part("auth and rate limits", False, ("api/auth.py", "api/ratelimit.py", "jwt/")),
    Part("route and middleware (payops)", False, ("api/",)),
    HTTP_SERVER,
    Part("event loop", True, ("uvloop/", "asyncio/runners.py", "asyncio/events.py")),
    Part("the bare handler's own", True, ("bench/perf_ceiling.py", "bench/perf_sql.py")),
)

SHARED = frozenset(p.name for p in PARTS if p.shared)  # work the bare handler does too

# A frame from aiohttp's shared modules (its writer, its streams) works for the client when
# the client is below it on the stack.
_CLIENT = ("aiohttp/client", "core/chain/jsonrpc.py")


def part_of(stack: Sequence[str]) -> Part | None:
    """The part a sample belongs to: that of its innermost frame that belongs to one."""
    for frame in reversed(stack):
        for part in PARTS:
            if any(f in frame for f in part.files):
                if part is HTTP_SERVER and any(c in f for f in stack for c in _CLIENT):
                    return RPC
                return part
    return None


@dataclass(frozen=True, slots=True)
class Shares:
    samples: int
    by_part: dict[str, int]  # part name (or OTHER) -> samples

    @property
    def own(self) -> float:
        """The share of the samples in work the bare handler does not do."""
        mine = sum(n for name, n in self.by_part.items() if name not in SHARED and name != OTHER)
        return mine / self.samples if self.samples else 0.0


def parse_line(line: str) -> tuple[list[str], int]:
    """One line of py-spy's raw format: `frame;frame;...;frame count`."""
    stack, sep, count = line.rstrip("\n").rpartition(" ")
    if not sep or not stack or not count.isdigit():
        raise ValueError(f"not a py-spy collapsed stack line: {line[:80]!r}")
    return stack.split(";"), int(count)


def shares(lines: Iterable[str]) -> Shares:
    by_part: Counter[str] = Counter()
    total = 0
    for line in lines:
        if not line.strip():
            continue
        stack, n = parse_line(line)
        part = part_of(stack)
        by_part[part.name if part else OTHER] += n
        total += n
    return Shares(total, dict(by_part))


def read(paths: Iterable[Path]) -> Shares:
    lines: list[str] = []
    for path in paths:
        lines += path.read_text().splitlines()
    return shares(lines)


def markdown(s: Shares, *, cpu_ms: float | None = None) -> str:
    """A table of the parts, largest first, and the verify's own share."""
    head = "| part | shared with the bare handler | samples | share |"
    rule = "|---|---|---:|---:|"
    if cpu_ms is not None:
        head += " ms per transaction |"
        rule += "---:|"
    rows = [head, rule]
    for name, n in sorted(s.by_part.items(), key=lambda kv: -kv[1]):
        mark = "yes" if name in SHARED else "-"
        row = f"| {name} | {mark} | {n:,} | {100 * n / s.samples:.1f} % |"
        if cpu_ms is not None:
            row += f" {cpu_ms * n / s.samples:.3f} |"
        rows.append(row)
    own = f"The verify's own work (not shared): {100 * s.own:.1f} % of {s.samples:,} samples"
    if cpu_ms is not None:
        own += f", {cpu_ms * s.own:.3f} of {cpu_ms:.3f} ms"
    return "\n".join([*rows, "", own + "."]) + "\n"


def _cpu_ms(cpu: dict[str, float] | None, process: str = "service") -> float | None:
    """A process's CPU per transaction, user and kernel (py-spy samples both)."""
    if not cpu:
        return None
    return float(cpu.get(process, 0.0)) + float(cpu.get(f"{process}_kernel", 0.0))


def report(out_dir: Path, result: dict[str, Any]) -> str | None:
    """`<out>/profile-shares.md`: the shares of a `bench.perf --profile` run's end-to-end
    slices and the bare handler's (per concurrency) and the steady duplicates', in ms with
    that run's CPU figures.
    Returns the file's path, or None when the run left no profile."""
    sections: list[str] = []
    for level, modes in sorted(result.get("levels", {}).items(), key=lambda kv: int(kv[0])):
        for mode, title, process in (
            ("e2e", "End-to-end verify", "service"),
            ("ceiling", "The bare handler (the HTTP ceiling)", "ceiling"),
        ):
            files = sorted(out_dir.glob(f"profile-{mode}-c{level}-r*.txt"))
            s = read(files) if files else None
            if s and s.samples:
                cpu = _cpu_ms(modes.get(mode, {}).get("cpu_ms_per_tx"), process)
                sections.append(f"## {title}, {level} clients\n\n{markdown(s, cpu_ms=cpu)}")
    duplicates = out_dir / "profile-duplicates.txt"
    s = read([duplicates]) if duplicates.exists() else None
    if s and s.samples:
        steady = result.get("duplicates", {}).get("steady", {})
        cpu = _cpu_ms(steady.get("cpu_ms_per_tx"))
        sections.append(f"## Steady duplicates\n\n{markdown(s, cpu_ms=cpu)}")
    if not sections:
        return None
    path = out_dir / "profile-shares.md"
    path.write_text(
        "# Where the service's samples went (`python -m bench.profile_shares`)\n\n"
        "ms: the share of the process's CPU per transaction (user and kernel) in this run.\n\n"
        + "\n".join(sections)
    )
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_shares",
        description="Sum py-spy's collapsed stacks (bench.perf --profile) by part of the verify.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="py-spy raw profiles")
    parser.add_argument("--cpu-ms", type=float, help="the service's CPU ms per transaction")
    a = parser.parse_args(argv)
    try:
        s = read(a.files)
    except (OSError, ValueError) as exc:
        print(f"bench.profile_shares: {exc}", file=sys.stderr)
        return 2
    if not s.samples:
        print("bench.profile_shares: no samples in those files", file=sys.stderr)
        return 2
    print(markdown(s, cpu_ms=a.cpu_ms), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
