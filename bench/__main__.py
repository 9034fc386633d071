"""`python -m bench <name> [args]`: run one benchmark (`perf`, ...); each is also runnable
as `python -m bench.<name>`."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "perf": "bench.perf",  # verify throughput and latency against PostgreSQL's own limit
    "recon": "bench.recon",
    "detect": "bench.detect",
    "rpc_batch": "bench.rpc_batch",  # the RPC client's CPU per call, alone or batched
    "profile_shares": "bench.profile_shares",  # a --profile run's samples, by part
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m bench {{{','.join(BENCHMARKS)}}} [args]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    result = module.main(argv[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
