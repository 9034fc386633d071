"""The Solana RPC fails under a real `payops serve` with many verifies in flight: a proxy
between the service and the local chain (`faulty_rpc.py`) answers too late (beyond the
service's RPC timeout), 429 with Retry-After, 500/502/503, garbage bodies, a transient
JSON-RPC error, drops the connection, or shows a transaction whose view changes between
commitments (confirmed — succeeded or failed — but not finalized; finalized by its status
but not served yet; gone from the node).

What is proven, from every answer and from the database:
- while a payment's fault lasts, every verify answers 202 PENDING with the reason that fault
  must give (`rpc_unavailable`, `tx_not_final`, `tx_not_found`) and a Retry-After, within
  the service's RPC budget — never a rejection, never a 5xx, never a credit; the intent stays
  PENDING and each attempt is recorded `pending` with that reason;
- the service asks `getTransaction` only at `finalized` (jsonParsed, with
  `maxSupportedTransactionVersion`), retries a bounded number of times, and waits out a
  429's Retry-After before asking again;
- under a flaky RPC (a fault on a random share of all requests), the only credits are of
  payments whose transaction the node really served at `finalized`;
- once the proxy heals, verifying again (two clients per intent) credits each intent exactly
  once: one credit announced, one purchase ledger transaction, balances equal the entries,
  the ledger sums to zero; and `/readyz` is 200 again without a restart.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.e2e.fault_checks import assert_exactly_once, observer, summary
from tests.e2e.faults import (
    HEAVY,
    Outcome,
    Paid,
    Tally,
    buy,
    pending,
    scale,
    settle,
    users_for,
    verify_once,
)
from tests.e2e.faulty_rpc import (
    COMMITMENT_KINDS,
    EXPECTED_REASON,
    TRANSPORT_KINDS,
    FaultyRpc,
    Kind,
    SeenGetTransaction,
    running_faulty_rpc,
)
from tests.e2e.harness import Chain, Service, running_chain, running_service, wait_ready

RPC_TIMEOUT_SECONDS = 1.0  # PAYOPS_RPC_TIMEOUT_SECONDS of the harness
MAX_RETRIES = 1  # PAYOPS_RPC_MAX_RETRIES of the harness
# 2 attempts of 1 s, a wait of up to the 4 s backoff cap, and slack for a loaded machine.
RPC_GIVE_UP_SECONDS = 8.0
ALL_KINDS = (*TRANSPORT_KINDS, *COMMITMENT_KINDS)
ASKED = {"encoding": "jsonParsed", "commitment": "finalized", "maxSupportedTransactionVersion": 0}


@pytest.fixture(scope="module")
async def rpc_fault_chain(
    http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path_factory.mktemp("rpc-faults-chain"), http) as chain:
        yield chain


def still_pending(outcome: Outcome) -> bool:
    return pending(outcome, "rpc_unavailable", "tx_not_final", "tx_not_found")


async def test_rpc_faults_keep_intents_pending_and_healing_credits_each_once(
    rpc_fault_chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    chain = rpc_fault_chain
    async with (
        running_faulty_rpc(chain.info.rpc_url, slow_seconds=RPC_TIMEOUT_SECONDS + 0.6) as proxy,
        running_service(
            chain,
            database_url,
            tmp_path / "service",
            http,
            PAYOPS_SOLANA_RPC_URL=proxy.url,
            # Each request names one signature, so a fault is one payment's: calls on their
            # own. Faults on batches: test_rpc_faults_on_batches_keep_every_guarantee.
            PAYOPS_RPC_MAX_BATCH="1",
        ) as service,
        observer(database_url) as pool,
    ):
        per_kind, repeats = scale(2, 10), scale(2, 4)
        paid = await buy(service, chain, users_for("rpc-fault", per_kind * len(ALL_KINDS)))
        schedule = {p.signature: ALL_KINDS[i % len(ALL_KINDS)] for i, p in enumerate(paid)}
        tally = Tally()

        # 1. A fault per payment: each verify must say exactly why it cannot decide yet.
        proxy.inject(schedule)
        gate = asyncio.Semaphore(16)

        async def verify_while_faulted(p: Paid) -> None:
            expected = EXPECTED_REASON[schedule[p.signature]]
            for _ in range(repeats):
                async with gate:
                    outcome = await verify_once(service, p)
                tally.record(p, outcome, pending(outcome, expected))

        await asyncio.gather(*(verify_while_faulted(p) for p in paid))
        tally.assert_clean()
        assert tally.slowest < RPC_GIVE_UP_SECONDS, tally.slowest
        assert set(proxy.injected) == {k.value for k in ALL_KINDS}, proxy.injected
        assert not proxy.passed, "a faulted payment's transaction reached the service"
        await assert_all_pending(pool, paid, schedule, repeats)
        assert_asked_as_designed(proxy.seen, paid, schedule, repeats)

        # 2. A flaky RPC: a fault on a random share of every request, for a while; half the
        # payments keep their own fault all along, and must stay exactly as pending as before.
        kept = {p.signature: schedule[p.signature] for p in paid[::2]}
        proxy.inject(kept, rate=0.5)
        proxy.rate_kinds = ALL_KINDS
        proxy.rng = random.Random(7305)
        flaky_seconds = scale(3, 20)
        flaky = await hammer(paid, service, tally, kept, seconds=flaky_seconds)
        tally.assert_clean()
        await assert_all_pending(pool, paid[::2], schedule, None)
        credited_while_flaky = await pool.fetch(
            "SELECT tx_signature FROM purchase_intents WHERE id = ANY($1::uuid[]) "
            "AND status = 'CONFIRMED'",
            [uuid.UUID(p.id) for p in paid],
        )
        # credits only from what the node really served at `finalized`
        assert {r["tx_signature"] for r in credited_while_flaky} <= proxy.passed
        assert not set(kept) & proxy.passed

        # 3. Healed: verifying again credits every payment, each exactly once.
        credited_before = set(tally.credited)
        await heal_and_settle(proxy, service, pool, paid, tally)
        assert not credited_before & {p.id for p in paid[::2]}
    summary(
        "rpc_faults",
        started,
        tally,
        intents=len(paid),
        faults_injected=proxy.total_injected,
        faults_by_kind=dict(sorted(proxy.injected.items())),
        rpc_requests_forwarded=dict(proxy.forwarded),
        flaky_phase={
            "seconds": flaky_seconds,
            "requests": flaky,
            "credited": len(credited_while_flaky),
        },
        heavy_phases=HEAVY,
    )


async def test_rpc_faults_on_batches_keep_every_guarantee(
    rpc_fault_chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> None:
    """Batches on (the default): a transport fault on every request, then on a random half of
    them, batches included, while 16 clients verify; then healed. Never a rejection or a
    5xx, nothing credited while every request fails, credits only of what the node served at
    `finalized`, then each intent credited exactly once."""
    started = time.monotonic()
    chain = rpc_fault_chain
    async with (
        running_faulty_rpc(chain.info.rpc_url, slow_seconds=RPC_TIMEOUT_SECONDS + 0.6) as proxy,
        running_service(
            chain, database_url, tmp_path / "service", http, PAYOPS_SOLANA_RPC_URL=proxy.url
        ) as service,
        observer(database_url) as pool,
    ):
        paid = await buy(service, chain, users_for("rpc-batch-fault", scale(24, 60)))
        tally = Tally()
        # Every request fails (TRANSPORT_KINDS, seeded): every verify asks the node, so the
        # 16 clients' calls meet in batches, and every batch fails.
        proxy.inject(rate=1.0)
        requests = await hammer(paid, service, tally, {}, seconds=scale(2, 5))
        tally.assert_clean()
        assert not tally.credited
        assert await confirmed(pool, paid) == set()
        assert proxy.batches, "no batch reached the node: nothing here was tested"
        assert proxy.batch_faults == len(proxy.batches)
        proxy.inject(rate=0.5)
        requests += await hammer(paid, service, tally, {}, seconds=scale(3, 15))
        tally.assert_clean()
        assert max(proxy.batches) <= 10  # PAYOPS_RPC_MAX_BATCH's default
        batched_faults = proxy.batch_faults
        assert await confirmed(pool, paid) <= proxy.passed

        await heal_and_settle(proxy, service, pool, paid, tally)
    summary(
        "rpc_faults_on_batches",
        started,
        tally,
        intents=len(paid),
        requests=requests,
        faults_injected=proxy.total_injected,
        faults_on_batches=batched_faults,
        faults_by_kind=dict(sorted(proxy.injected.items())),
        batches=len(proxy.batches),
        largest_batch=max(proxy.batches),
        heavy_phases=HEAVY,
    )


async def heal_and_settle(
    proxy: FaultyRpc, service: Service, pool: asyncpg.Pool, paid: list[Paid], tally: Tally
) -> None:
    """Heal the proxy, then verify every payment again (two clients per intent) until each is
    credited: every one announced credited once, and credited exactly once in the books."""
    proxy.heal()
    await wait_ready(service, within=10)
    await settle(
        paid,
        lambda: service,
        tally,
        allowed=lambda o: o.settled or still_pending(o),
        within=scale(30, 120),
        copies=2,
    )
    tally.assert_clean()
    assert set(tally.credited) == {p.id for p in paid}, "a payment never announced credited"
    await assert_exactly_once(pool, paid)


async def confirmed(pool: asyncpg.Pool, paid: list[Paid]) -> set[str]:
    """The signatures that confirmed any of `paid`'s intents."""
    rows = await pool.fetch(
        "SELECT tx_signature FROM purchase_intents WHERE id = ANY($1::uuid[]) "
        "AND status = 'CONFIRMED'",
        [uuid.UUID(p.id) for p in paid],
    )
    return {r["tx_signature"] for r in rows}


async def hammer(
    paid: list[Paid], service: Service, tally: Tally, kept: dict[str, Kind], *, seconds: float
) -> int:
    """Verify random intents from 16 clients for `seconds`; the number of requests. A payment
    in `kept` must answer its fault's reason; any other, 200 or a clean 202."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pick = random.Random(99)
    sent = 0

    async def client() -> None:
        nonlocal sent
        while loop.time() < deadline:
            p = pick.choice(paid)
            outcome = await verify_once(service, p)
            sent += 1
            if p.signature in kept:
                ok = pending(outcome, EXPECTED_REASON[kept[p.signature]])
            else:
                ok = outcome.settled or still_pending(outcome)
            tally.record(p, outcome, ok)

    await asyncio.gather(*(client() for _ in range(16)))
    return sent


async def assert_all_pending(
    pool: asyncpg.Pool, paid: list[Paid], schedule: dict[str, Kind], repeats: int | None
) -> None:
    """Nothing credited, nothing rejected: each attempt (`repeats` of them, if given)
    recorded pending, with its fault's reason."""
    rows = await pool.fetch(
        """SELECT i.id, i.status, i.tx_signature,
             (SELECT count(*) FROM ledger_transactions t WHERE t.intent_id = i.id) AS ledger,
             array(SELECT a.outcome || ':' || coalesce(a.code, '') FROM verification_attempts a
                   WHERE a.intent_id = i.id) AS attempts
           FROM purchase_intents i WHERE i.id = ANY($1::uuid[])""",
        [uuid.UUID(p.id) for p in paid],
    )
    by_id = {str(r["id"]): r for r in rows}
    for p in paid:
        r = by_id[p.id]
        reason = EXPECTED_REASON[schedule[p.signature]]
        assert (r["status"], r["tx_signature"], r["ledger"]) == ("PENDING", None, 0), dict(r)
        attempts = Counter(r["attempts"])
        assert set(attempts) == {f"pending:{reason}"}, dict(r)
        assert repeats is None or attempts.total() == repeats, dict(r)
    balances = await pool.fetchval(
        "SELECT count(*) FROM user_balances WHERE user_id = ANY($1) AND balance <> 0",
        list({p.user for p in paid}),
    )
    assert balances == 0


def assert_asked_as_designed(
    calls: list[SeenGetTransaction], paid: list[Paid], schedule: dict[str, Kind], repeats: int
) -> None:
    """Only `finalized` views were asked for; retries bounded; a 429's Retry-After honoured."""
    assert calls
    assert all(s.config == ASKED for s in calls), {str(s.config) for s in calls}
    for p in paid:
        arrivals = sorted(s.at for s in calls if s.signature == p.signature)
        kind = schedule[p.signature]
        assert repeats <= len(arrivals) <= repeats * (1 + MAX_RETRIES), (kind, arrivals)
        if kind is Kind.RATE_LIMITED:
            # each verify: the first ask, then the retry no sooner than Retry-After (1 s)
            assert len(arrivals) == repeats * 2, arrivals
            gaps = [b - a for a, b in zip(arrivals[0::2], arrivals[1::2], strict=True)]
            assert all(gap >= 0.95 for gap in gaps), gaps
