"""Benchmark: how fast payops detects payments nobody verified, and what it costs in RPC.

    python -m bench.detect [--rate 20] [--seconds 60] [--abandoned 10000] [--quick]
                           [--drain 30] [--sweep-wait 150] [--out bench/results/detect.json]

Everything on 127.0.0.1: an embedded PostgreSQL, the local chain served from this process
(requests from the service arrive on a path of their own, `/service`, and are counted per
JSON-RPC method), and `payops serve` as a child process. Two phases, each on a fresh
database holding `--abandoned` PENDING intents that are never paid:

1. **watcher**: the treasury watcher at its default interval (1 s); the recovery sweep kept
   off the intents (`PAYOPS_RECOVERY_MIN_AGE_SECONDS` = 1 day) so every RPC request counted
   is the watcher's;
2. **sweep**: the watcher off (`PAYOPS_WATCH_ENABLED=false`), the recovery sweep with its
   default settings (interval, batch, minimum age).

In each, `--rate` payments a second for `--seconds` seconds, each to its own intent made
through the API beforehand, each a Solana Pay transfer with the intent's reference and
never verified. Measured per payment: landing (the first `getSignatureStatuses` answering
`finalized` after `sendTransaction` returned; the local chain finalizes as it lands) to
CONFIRMED visible to a client (a `GET /v1/purchase-intents/{id}` answering CONFIRMED; the
GET is sent when the database announces the intent's change (`LISTEN payops_intents`, the
notification the change commits with), with a database check every second as a fallback).
The RPC requests the service made from the first payment until the last credit (or the
end of the wait) are divided by the payments credited. A phase waits at most `--drain`
(watcher) or `--sweep-wait` (sweep) seconds after its last payment; payments still PENDING
then are reported, not waited for.

Prints a table and writes the figures to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.detect_report import summarize, table
from bench.detect_stack import CountingChain, abandon, bearer, counting_chain, service
from bench.perf_stack import database
from core import db
from localnet.wallet import Wallet

USERS = 50
CREDITS = 1


@dataclass(frozen=True)
class Config:
    rate: float
    seconds: float
    abandoned: int
    drain: float
    sweep_wait: float
    out: Path
    phases: tuple[str, ...]


# --- one phase ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    landed: dict[str, float] = field(default_factory=dict)  # intent id -> monotonic
    seen: dict[str, float] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    send_errors: int = 0
    rpc: Counter[str] = field(default_factory=Counter)
    paying_seconds: float = 0.0
    waited_seconds: float = 0.0
    paid: bool = False  # every payment sent
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def lags(self) -> list[float]:
        return sorted(self.seen[i] - self.landed[i] for i in self.seen if i in self.landed)


async def run_phase(
    cfg: Config, name: str, chain: CountingChain, dsn: str, work_dir: Path, **settings: str
) -> dict[str, Any]:
    await db.migrate(dsn)
    phase = Phase(name)
    n = round(cfg.rate * cfg.seconds)
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    listener = await asyncpg.connect(dsn)
    connector = aiohttp.TCPConnector(limit=64)
    try:
        async with (
            service(dsn, chain, work_dir / name, **settings) as (_, url),
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30)
            ) as http,
        ):
            intents = await make_intents(http, url, n + 1)
            await abandon(pool, intents.pop(), cfg.abandoned)
            for intent in intents:
                phase.owner[intent["id"]] = intent["user_id"]
            wallet = Wallet(chain.info.rpc_url, chain.info.payer_keypair(), http)
            wake = asyncio.Event()
            notified: set[str] = set()

            def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
                if payload in phase.owner and payload not in phase.seen:
                    notified.add(payload)
                    wake.set()

            await listener.add_listener("payops_intents", on_notify)
            watcher = asyncio.create_task(observe(phase, http, url, pool, notified, wake))
            before = Counter(chain.counts)
            started = time.monotonic()
            await pay_all(cfg, phase, wallet, intents)
            phase.paying_seconds = time.monotonic() - started
            wait = cfg.drain if name == "watcher" else cfg.sweep_wait
            phase.paid = True
            wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(phase.all_seen.wait(), timeout=wait)
            phase.waited_seconds = time.monotonic() - started - phase.paying_seconds
            phase.rpc = Counter(chain.counts) - before
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            credited = int(
                await pool.fetchval(
                    """SELECT count(*) FROM ledger_transactions
                       WHERE kind = 'purchase' AND intent_id = ANY($1::uuid[])""",
                    [uuid.UUID(i) for i in phase.owner],
                )
            )
    finally:
        await listener.close()
        await pool.close()
    return summarize(cfg, phase, credited, settings)


async def make_intents(http: aiohttp.ClientSession, url: str, n: int) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(16)

    async def one(k: int) -> dict[str, Any]:
        user = f"payer-{k % USERS}"
        async with (
            limit,
            http.post(
                url + "/v1/purchase-intents", json={"credits": CREDITS}, headers=bearer(user)
            ) as resp,
        ):
            body = await resp.json()
            assert resp.status == 201, body
            return dict(body) | {"user_id": user}

    return list(await asyncio.gather(*(one(k) for k in range(n))))


async def pay_all(cfg: Config, phase: Phase, wallet: Wallet, intents: list[dict[str, Any]]) -> None:
    """Each intent paid at its slot of the schedule (`rate` a second), concurrently."""
    start = time.monotonic()
    decimals = 6

    async def one(k: int, intent: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, start + k / cfg.rate - time.monotonic()))
        try:
            signature = await wallet.pay(intent, decimals=decimals)
            status = await wallet.wait_finalized(signature)
        except Exception as exc:  # a bench counts what failed rather than stopping
            phase.send_errors += 1
            print(f"payment for {intent['id']} failed: {exc}", file=sys.stderr)
            return
        if status.get("err") is None:
            phase.landed[intent["id"]] = time.monotonic()

    await asyncio.gather(*(one(k, i) for k, i in enumerate(intents)))


async def observe(
    phase: Phase,
    http: aiohttp.ClientSession,
    url: str,
    pool: asyncpg.Pool,
    notified: set[str],
    wake: asyncio.Event,
) -> None:
    """A client: on each notification (or every second, from the database) GET the intents
    that changed; the time a GET answers CONFIRMED is when the client saw it."""

    async def look(intent_id: str) -> None:
        user = phase.owner[intent_id]
        async with http.get(f"{url}/v1/purchase-intents/{intent_id}", headers=bearer(user)) as resp:
            body = await resp.json()
        if resp.status == 200 and body.get("status") == "CONFIRMED":
            phase.seen.setdefault(intent_id, time.monotonic())

    last_check = time.monotonic()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=1.0)
        wake.clear()
        todo = set(notified)
        notified.clear()
        if time.monotonic() - last_check >= 1.0:
            last_check = time.monotonic()
            waiting = [uuid.UUID(i) for i in phase.landed if i not in phase.seen]
            rows = await pool.fetch(
                "SELECT id FROM purchase_intents WHERE id = ANY($1::uuid[]) "
                "AND status = 'CONFIRMED'",
                waiting,
            )
            todo |= {str(r["id"]) for r in rows}
        await asyncio.gather(*(look(i) for i in todo if i not in phase.seen))
        if phase.paid and len(phase.seen) >= len(phase.landed):
            phase.all_seen.set()


# --- the run -----------------------------------------------------------------------------------


PHASE_SETTINGS: dict[str, dict[str, str]] = {
    # Only the watcher acts on the intents: the sweep's minimum age is a day.
    "watcher": {"PAYOPS_WATCH_ENABLED": "true", "PAYOPS_RECOVERY_MIN_AGE_SECONDS": "86400"},
    # Only the sweep, at its defaults (interval, batch, minimum age).
    "sweep": {"PAYOPS_WATCH_ENABLED": "false"},
}


async def run(cfg: Config) -> dict[str, Any]:
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="payops-detect-") as tmp:
        work = Path(tmp)
        async with database(work) as pg, counting_chain() as chain:
            for name in cfg.phases:
                dsn = await pg.create(f"detect_{name}")
                print(
                    f"phase {name}: {cfg.rate}/s for {cfg.seconds} s, "
                    f"{cfg.abandoned} abandoned intents ...",
                    file=sys.stderr,
                )
                results.append(await run_phase(cfg, name, chain, dsn, work, **PHASE_SETTINGS[name]))
    return {
        "benchmark": "detect",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "rate": cfg.rate,
            "seconds": cfg.seconds,
            "abandoned": cfg.abandoned,
            "drain": cfg.drain,
            "sweep_wait": cfg.sweep_wait,
        },
        "chain_finality_seconds": 0.0,  # the local chain finalizes a transaction as it lands
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "phases": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="payments per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to pay")
    parser.add_argument("--abandoned", type=int, default=10_000, help="PENDING intents never paid")
    parser.add_argument("--drain", type=float, default=30.0, help="watcher: wait at most (s)")
    parser.add_argument("--sweep-wait", type=float, default=150.0, help="sweep: wait at most (s)")
    parser.add_argument("--phases", default="watcher,sweep", help="watcher,sweep or one of them")
    parser.add_argument(
        "--quick", action="store_true", help="10 s, 1000 abandoned, 75 s sweep wait"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.abandoned, args.sweep_wait = 10.0, 1000, 75.0
    out = args.out or Path(__file__).parent / "results" / (
        "detect-quick.json" if args.quick else "detect.json"
    )
    cfg = Config(
        rate=args.rate,
        seconds=args.seconds,
        abandoned=args.abandoned,
        drain=args.drain,
        sweep_wait=args.sweep_wait,
        out=out,
        phases=tuple(p for p in args.phases.split(",") if p),
    )
    report = asyncio.run(run(cfg))
    print(table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
