"""The perf run's ratios, targets, Markdown table and chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.perf_stats import ratio

MODES = ("pgbench", "ceiling", "core", "e2e")
LABELS = {
    "pgbench": "pgbench (PostgreSQL's limit)",
    "ceiling": "HTTP ceiling (bare aiohttp + asyncpg)",
    "core": "core credit path (credit_in)",
    "e2e": "end-to-end verify over HTTP",
}


def add_ratios(level: dict[str, Any]) -> None:
    tps = {m: float(level[m]["throughput"]) for m in MODES}
    level["ratios"] = {
        "core_vs_pgbench": ratio(tps["core"], tps["pgbench"]),
        "ceiling_vs_pgbench": ratio(tps["ceiling"], tps["pgbench"]),
        "e2e_vs_pgbench": ratio(tps["e2e"], tps["pgbench"]),
        "e2e_vs_ceiling": ratio(tps["e2e"], tps["ceiling"]),
    }


def one_line(level: dict[str, Any]) -> str:
    parts = [f"{m} {level[m]['throughput']:.0f}/s p99 {level[m]['p99_ms']:.1f} ms" for m in MODES]
    return "; ".join(parts)


def _target(value: float | None, limit: float, *, at_least: bool) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"value": value, "limit": limit, "at_least" if at_least else "at_most": True, "met": met}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    levels = result.get("levels", {})
    found: dict[str, Any] = {}

    def level_value(clients: str, *path: str) -> float | None:
        value: Any = levels.get(clients)
        for key in path:
            value = None if value is None else value.get(key)
        return None if value is None else float(value)

    for clients in ("16", "64"):
        found[f"core_vs_pgbench_at_{clients}"] = _target(
            level_value(clients, "ratios", "core_vs_pgbench"), 0.6, at_least=True
        )
    found["e2e_vs_ceiling_at_64"] = _target(
        level_value("64", "ratios", "e2e_vs_ceiling"), 0.6, at_least=True
    )
    found["e2e_vs_pgbench_at_64"] = _target(
        level_value("64", "ratios", "e2e_vs_pgbench"), 0.25, at_least=True
    )
    found["e2e_p99_ms_at_16"] = _target(level_value("16", "e2e", "p99_ms"), 30, at_least=False)
    found["e2e_vs_pgbench_at_16"] = _target(
        level_value("16", "ratios", "e2e_vs_pgbench"), 0.4, at_least=True
    )
    service = level_value("16", "e2e", "cpu_ms_per_tx", "service")
    bare = level_value("16", "ceiling", "cpu_ms_per_tx", "ceiling")
    found["service_cpu_vs_ceiling_at_16"] = _target(
        None if service is None or not bare else round(service / bare, 3), 1.8, at_least=False
    )
    pg_e2e = level_value("16", "e2e", "cpu_ms_per_tx", "postgres")
    pg_bench = level_value("16", "pgbench", "cpu_ms_per_tx", "postgres")
    found["postgres_cpu_e2e_vs_pgbench_at_16"] = _target(
        None if pg_e2e is None or not pg_bench else round(pg_e2e / pg_bench, 3), 1.1, at_least=False
    )
    dup = result.get("duplicates")
    if dup is not None:
        found["duplicates_never_reach_rpc_or_ledger"] = {
            "value": dup["after_credit_never_reached_rpc_or_ledger"],
            "met": bool(dup["after_credit_never_reached_rpc_or_ledger"])
            and bool(dup["exactly_one_credit"]),
        }
        found["duplicates_p99_ms"] = _target(dup["after_credit"]["p99_ms"], 20, at_least=False)
        steady = dup.get("steady")
        if steady is not None:
            found["steady_duplicates_per_s"] = _target(steady["throughput"], 2500, at_least=True)
            found["steady_duplicates_p99_ms"] = _target(steady["p99_ms"], 10, at_least=False)
    workers = result.get("workers")
    if workers is not None:
        found["workers_throughput_ratio"] = _target(workers["throughput_ratio"], 1.6, at_least=True)
    triage = result.get("triage")
    if triage is not None:
        found["triage_p99_ms_at_1m"] = _target(triage["p99_ms"], 50, at_least=False) | {
            "intents": triage["intents"]
        }
    memory = result.get("service_memory")
    if memory is not None:
        found["service_peak_rss_mb"] = _target(memory["peak_rss_mb"], 250, at_least=False)
    return found


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Run {result['started_at']} — `{result['command']}` — {result['elapsed_s']} s",
        "",
        "| clients | mode | throughput (/s) | p50 ms | p95 ms | p99 ms | errors | "
        "x pgbench | x ceiling |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients, level in result.get("levels", {}).items():
        r = level["ratios"]
        vs_pg = {"ceiling": r["ceiling_vs_pgbench"], "core": r["core_vs_pgbench"]}
        vs_pg["e2e"] = r["e2e_vs_pgbench"]
        for mode in MODES:
            s = level[mode]
            lines.append(
                f"| {clients} | {mode} | {_fmt(s['throughput'])} | {_fmt(s['p50_ms'], 1)} | "
                f"{_fmt(s['p95_ms'], 1)} | {_fmt(s['p99_ms'], 1)} | {s['errors']} | "
                f"{_fmt(vs_pg.get(mode), 2)} | "
                f"{_fmt(r['e2e_vs_ceiling'] if mode == 'e2e' else None, 2)} |"
            )
    sides = (
        "clients",
        "bench_process",
        "service",
        "service_kernel",
        "ceiling",
        "ceiling_kernel",
        "postgres",
    )
    lines += [
        "",
        "CPU milliseconds per transaction, by process (clients: pgbench or the load "
        "generator; bench_process: the core-path runner and the local chain; *_kernel: the "
        "part spent in the kernel).",
        "",
        "| clients | mode | " + " | ".join(sides) + " |",
        "|---:|---|" + "---:|" * len(sides),
    ]
    for clients, level in result.get("levels", {}).items():
        for mode in MODES:
            cpu = level[mode].get("cpu_ms_per_tx", {})
            cells = " | ".join(_fmt(cpu.get(side), 2) for side in sides)
            lines.append(f"| {clients} | {mode} | {cells} |")
    grouped = [
        f"{clients} clients: {e2e['credits_grouped']:,} of {e2e['credited']:,} credits in "
        f"{e2e['credit_groups']:,} groups"
        for clients, level in result.get("levels", {}).items()
        if (e2e := level["e2e"]).get("credit_groups", -1) >= 0 and e2e.get("credited")
    ]
    if grouped:
        lines += [
            "",
            "Group commit in the end-to-end slices (the service's /metrics; the ceiling and "
            "pgbench commit each credit on its own): " + "; ".join(grouped) + ".",
        ]
    dup = result.get("duplicates")
    if dup is not None:
        lines += [
            "",
            f"Duplicates: {dup['concurrent']} concurrent verifies of one intent.",
            "",
            "| phase | statuses | p50 ms | p99 ms | max ms | RPC requests (chain / "
            "SolanaRpc.stats) | reached credit_in | credits of the intent |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for phase in ("race", "after_credit"):
            d = dup[phase]
            lines.append(
                f"| {phase} | {d['statuses']} | {_fmt(d['p50_ms'], 1)} | {_fmt(d['p99_ms'], 1)} "
                f"| {_fmt(d['max_ms'], 1)} | {d['rpc_requests']} / "
                f"{d.get('rpc_requests_service_stats', '-')} | "
                f"{d['reached_ledger_write_path']} | {d['ledger_credits_of_intent']} |"
            )
        steady = dup.get("steady")
        if steady is not None:
            lines += [
                "",
                f"Duplicates at a steady {steady['clients']} clients (every verify of the "
                f"{steady['clients']}-client run, again): {_fmt(steady['throughput'])}/s, p50 "
                f"{_fmt(steady['p50_ms'], 1)} ms, p99 {_fmt(steady['p99_ms'], 1)} ms, RPC "
                f"requests {steady['rpc_requests']}; CPU ms per duplicate: "
                + ", ".join(
                    f"{side} {_fmt(ms, 2)}"
                    for side, ms in steady.get("cpu_ms_per_tx", {}).items()
                    if side in ("clients", "service", "service_kernel", "postgres")
                )
                + ".",
            ]
    triage = result.get("triage")
    if triage is not None:
        lines += [
            "",
            f"Triage over {triage['intents']:,} intents: {triage['lookups']} lookups, p50 "
            f"{_fmt(triage['p50_ms'], 1)} ms, p95 {_fmt(triage['p95_ms'], 1)} ms, p99 "
            f"{_fmt(triage['p99_ms'], 1)} ms, max {_fmt(triage['max_ms'], 1)} ms "
            f"(window `last 2h`: p99 {_fmt(triage['window_last_2h']['p99_ms'], 1)} ms).",
        ]
    workers = result.get("workers")
    if workers is not None:
        one, many = workers["one"], workers["many"]
        lines += [
            "",
            f"Workers (end-to-end verify at {workers['clients']} clients, interleaved slices, "
            f"same run): 1 worker {_fmt(one['throughput'])}/s p99 {_fmt(one['p99_ms'], 1)} ms, "
            f"service CPU {_fmt(one['cpu_ms_per_tx']['service'], 2)} ms per verify; "
            f"{workers['workers']} workers {_fmt(many['throughput'])}/s p99 "
            f"{_fmt(many['p99_ms'], 1)} ms, service CPU "
            f"{_fmt(many['cpu_ms_per_tx']['service'], 2)} ms per verify (throughput x"
            f"{_fmt(workers['throughput_ratio'], 2)}, service CPU per verify x"
            f"{_fmt(workers['service_cpu_ratio'], 2)}).",
        ]
        bound = workers.get("machine_bound")
        if bound is not None:
            lines[-1] += (
                f" With one worker a verify cost all processes "
                f"{_fmt(bound['cpu_ms_per_verify'], 2)} ms of CPU and kept "
                f"{_fmt(bound['cpus_busy_with_one_worker'], 2)} of the "
                f"{bound['cpus']} CPUs busy: at that cost the {bound['cpus']} CPUs give at most "
                f"{_fmt(bound['verifies_per_s_at_most'])}/s, x"
                f"{_fmt(bound['throughput_ratio_at_most'], 2)} one worker's rate, whatever the "
                "number of workers."
            )
        steady = workers.get("steady_duplicates")
        if steady is not None:
            cpu = steady.get("cpu_ms_per_tx", {})
            lines[-1] += (
                f" Steady duplicates on the {workers['workers']} workers at {steady['clients']} "
                f"clients: {_fmt(steady['throughput'])}/s, p50 {_fmt(steady['p50_ms'], 1)} ms, "
                f"p99 {_fmt(steady['p99_ms'], 1)} ms, RPC requests {steady['rpc_requests']}; "
                f"CPU ms per duplicate: service {_fmt(cpu.get('service', 0.0), 2)}, postgres "
                f"{_fmt(cpu.get('postgres', 0.0), 2)}."
            )
    watcher = result.get("watcher")
    if watcher is not None:
        lines += ["", watcher_line(result, watcher)]
    memory = result.get("service_memory")
    if memory is not None:
        lines += [
            "",
            f"Service memory: peak RSS {_fmt(memory['peak_rss_mb'], 1)} MB "
            f"(max sampled under load {_fmt(memory['max_sampled_rss_under_load_mb'], 1)} MB).",
        ]
    lines += ["", "| target | value | limit | met |", "|---|---:|---:|---|"]
    for name, t in result.get("targets", {}).items():
        value = t["value"]
        shown = _fmt(value, 3 if abs(value) < 10 else 1) if isinstance(value, float) else str(value)
        limit = t.get("limit")
        lines.append(f"| {name} | {shown} | {'-' if limit is None else limit} | {t['met']} |")
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> str:
    """Throughput and p99 against concurrency, one line per mode; a message either way."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install matplotlib)"
    levels = result.get("levels", {})
    clients = [int(c) for c in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"pgbench": "k--", "ceiling": "b--", "core": "g-o", "e2e": "r-o"}
    for mode in MODES:
        tps = [levels[str(c)][mode]["throughput"] for c in clients]
        p99 = [levels[str(c)][mode]["p99_ms"] for c in clients]
        left.plot(clients, tps, styles[mode], label=LABELS[mode])
        right.plot(clients, p99, styles[mode], label=LABELS[mode])
    for axis, title, unit in (
        (left, "credits per second", "/s"),
        (right, "p99 latency", "ms"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(clients, [str(c) for c in clients])
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    right.set_yscale("log")
    right.axhline(30, color="grey", linestyle=":", linewidth=1)
    right.annotate("target: e2e p99 30 ms at 16 clients", (clients[0], 30), fontsize=7,
                   color="grey", xytext=(0, 3), textcoords="offset points")  # fmt: skip
    left.legend(fontsize=8)
    machine = result.get("machine", {})
    fig.suptitle(
        f"payops verify vs PostgreSQL — {machine.get('cpus')} CPUs, {machine.get('cpu')} — "
        f"{result.get('started_at')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"


def watcher_line(result: dict[str, Any], watcher: dict[str, Any]) -> str:
    """The treasury watcher's CPU per payment against the end-to-end verify's at the highest
    level up to 16 clients."""
    cpu, idle = watcher["cpu_ms_per_payment"], watcher["idle_cpu_ms_per_s"]
    levels = [int(c) for c in result.get("levels", {}) if int(c) <= 16]
    versus = ""
    if levels:
        clients = max(levels)
        e2e = result["levels"][str(clients)]["e2e"]["cpu_ms_per_tx"]
        versus = (
            f" (the end-to-end verify at {clients} clients: service {_fmt(e2e['service'], 2)}, "
            f"postgres {_fmt(e2e['postgres'], 2)} ms; the watcher's service CPU per payment "
            f"x{_fmt(cpu['service'] / max(e2e['service'], 1e-9), 2)})"
        )
    return (
        f"Treasury watcher ({watcher['payments']:,} payments, no client request): all credited "
        f"{_fmt(watcher['all_credited_s'], 1)} s after the first payment (paying took "
        f"{_fmt(watcher['paid_s'], 1)} s; {_fmt(watcher['credited_per_s'])}/s); CPU ms per "
        f"payment: service {_fmt(cpu['service'], 2)}, postgres {_fmt(cpu['postgres'], 2)}, "
        f"bench process (chain, paying) {_fmt(cpu['bench_process'], 2)}{versus}; idle polling "
        f"costs the service {_fmt(idle['service'], 2)} ms and postgres "
        f"{_fmt(idle['postgres'], 2)} ms of CPU per second."
    )
