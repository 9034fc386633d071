"""The database fails under a real `payops serve` with many verifies in flight: its backends
are terminated again and again (`pg_terminate_backend`), and PostgreSQL itself is stopped —
shut down fast, or crashed (`-m immediate`) — and started again on the same socket.

What is proven, each time from the database and from every answer the clients got:
- while the fault lasts, a request that fails fails cleanly: 503 `database_unavailable` with
  a JSON error and Retry-After (or 202 if the chain was slow) — never a hang, never a 500,
  never a rejection (422) or a conflict (409);
- afterwards the same service process, never restarted, answers again by itself (`/readyz`
  200, a new purchase verifies and credits, its background audit sealing chains every row
  again) — no manual step;
- every paid intent the clients retried is credited exactly once: one purchase ledger
  transaction, one `confirmed` attempt and one audit record per intent, no credit announced
  twice, every 200 survived a crash of the server, balances equal the entries, the ledger
  sums to zero.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.facts import new_user
from tests.e2e.fault_checks import assert_exactly_once, await_sealed, observer, summary
from tests.e2e.fault_processes import OwnPostgres
from tests.e2e.faults import (
    HEAVY,
    OBSERVER,
    Outcome,
    Paid,
    Tally,
    background,
    buy,
    clean_error,
    pending,
    scale,
    settle,
    users_for,
    verify_once,
)
from tests.e2e.harness import Chain, Service, running_chain, running_service, wait_ready
from tests.e2e.procs import wait_until


@pytest.fixture(scope="module")
async def db_fault_chain(
    http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Chain]:
    """A chain of this module's own: nothing else's load shares it."""
    async with running_chain(tmp_path_factory.mktemp("db-faults-chain"), http) as chain:
        yield chain


def during_db_fault(outcome: Outcome) -> bool:
    """Settled, or a clean 'try again': the only answers allowed while the database fails."""
    return (
        outcome.settled
        or clean_error(outcome, "database_unavailable")
        or pending(outcome, "rpc_unavailable")
    )


def still_loading(load: asyncio.Task[None]) -> None:
    """The load must outlast the faults; if it failed, its own error says why."""
    if load.done():
        load.result()
        raise AssertionError("the load finished before the fault was over")


async def fresh_purchase_credits(service: Service, chain: Chain) -> list[Paid]:
    """A purchase made after the fault, end to end on the same service process."""
    [paid] = await buy(service, chain, [new_user("after-fault")])
    outcome = await verify_once(service, paid)
    assert outcome.label == "200 credited", outcome
    return [paid]


async def test_backends_terminated_again_and_again_under_load_lose_and_double_nothing(
    db_fault_chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    chain = db_fault_chain
    async with (
        running_service(chain, database_url, tmp_path / "service", http) as service,
        observer(database_url) as pool,
    ):
        paid = await buy(service, chain, users_for("pg-kill", scale(48, 240)))
        tally = Tally()
        rounds_over = asyncio.Event()
        rounds_run = 0
        killed: Counter[str] = Counter()  # backends terminated, by their state at the time
        rounds = scale(12, 60)
        # Credits in flight together share one backend (group commit), so fewer are busy
        # at any instant: the rounds go on (up to 5x) until one has hit a request in flight.
        most_rounds = 5 * rounds
        load = settle(
            paid,
            lambda: service,
            tally,
            allowed=during_db_fault,
            within=scale(60, 300),
            copies=2,
            until=rounds_over,
        )
        async with background(load) as loading:
            try:
                while rounds_run < most_rounds and not (
                    rounds_run >= rounds and killed["active"] + killed["idle in transaction"]
                ):
                    rounds_run += 1
                    still_loading(loading)
                    rows = await pool.fetch(
                        """SELECT coalesce(state, 'unknown') AS state,
                                  pg_terminate_backend(pid) AS done
                           FROM pg_stat_activity
                           WHERE datname = current_database() AND pid <> pg_backend_pid()
                             AND application_name <> $1 AND backend_type = 'client backend'""",
                        OBSERVER,
                    )
                    killed.update(r["state"] for r in rows if r["done"])
                    await asyncio.sleep(0.25)
            finally:
                rounds_over.set()

        recovered = await wait_ready(service, within=10)
        fresh = await fresh_purchase_credits(service, chain)
        tally.assert_clean()
        # the fault hit requests in flight, not only idle connections
        assert killed["active"] + killed["idle in transaction"] > 0, killed
        assert tally.answers["503 database_unavailable"] > 0, tally.answers
        await assert_exactly_once(pool, [*paid, *fresh])
        await await_sealed(pool)
    summary(
        "pg_terminate_backend",
        started,
        tally,
        intents=len(paid),
        kill_rounds=rounds_run,
        backends_terminated=dict(killed),
        ready_again_seconds=round(recovered, 2),
    )


async def restart_mid_load(
    pg: OwnPostgres,
    service: Service,
    tally: Tally,
    loading: asyncio.Task[None],
    index: int,
    mode: str,
    *,
    rounds: int,
    intents: int,
) -> dict[str, object]:
    """Once the load has credited its share, stop PostgreSQL (`mode`), see the service say
    so, start it again, and time the service's way back to ready."""
    target = intents * (index + 1) // (rounds + 1)

    async def progressed() -> bool:
        still_loading(loading)
        return len(tally.settled) >= target

    await wait_until(progressed, f"{target} intents credited", within=30)
    refused_before = tally.answers["503 database_unavailable"]

    await pg.stop(mode)
    stopped_at = time.monotonic()
    ready = await service.readyz()
    assert ready.status == 503, ready
    assert ready.body["checks"]["database"] != "ok", ready

    async def refused() -> bool:
        still_loading(loading)
        return tally.answers["503 database_unavailable"] > refused_before

    # verifies in flight meet the dead server and answer 503, promptly
    await wait_until(refused, "a verify refused while PostgreSQL is down")
    await pg.start_again()
    back = await wait_ready(service, within=15)
    return {
        "mode": mode,
        "down_seconds": round(time.monotonic() - stopped_at - back, 2),
        "ready_after_restart_seconds": round(back, 2),
    }


async def test_postgres_restarted_mid_load_and_the_service_recovers_by_itself(
    db_fault_chain: Chain, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    started = time.monotonic()
    chain = db_fault_chain
    modes = ["fast", "immediate"] * (3 if HEAVY else 1)
    pg = OwnPostgres()
    try:
        dsn = await pg.start()
        async with running_service(chain, dsn, tmp_path / "service", http) as service:
            paid = await buy(service, chain, users_for("pg-restart", scale(60, 300)))
            tally = Tally()
            rounds_over = asyncio.Event()
            load = settle(
                paid,
                lambda: service,
                tally,
                allowed=during_db_fault,
                within=scale(60, 300),
                copies=2,
                backoff=0.1,
                until=rounds_over,
            )
            down: list[dict[str, object]] = []
            async with background(load) as loading:
                try:
                    for i, mode in enumerate(modes):
                        down.append(
                            await restart_mid_load(
                                pg,
                                service,
                                tally,
                                loading,
                                i,
                                mode,
                                rounds=len(modes),
                                intents=len(paid),
                            )
                        )
                finally:
                    rounds_over.set()

            fresh = await fresh_purchase_credits(service, chain)
            tally.assert_clean()
            async with observer(dsn) as pool:
                await assert_exactly_once(pool, [*paid, *fresh])
                await await_sealed(pool)
            assert pg.restarts == len(modes)
        summary(
            "postgres_restart",
            started,
            tally,
            intents=len(paid),
            restarts=down,
        )
    finally:
        await pg.close()
