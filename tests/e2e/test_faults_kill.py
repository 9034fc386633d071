"""A service replica is SIGKILLed mid-request: three `payops serve` processes on one database
and one chain, clients spread over them, and one replica killed while some of its verifies
are provably inside the credit's database transaction (the test holds the row lock the credit
needs last, so each waits there with its ledger rows already written in its transaction) and
others provably wait on its RPC (held at a proxy in front of that replica only).

What is proven:
- the killed process's credits in flight leave nothing behind: once their orphaned backends
  are gone, those intents are still PENDING with no ledger row, and no attempt or audit record
  carries those requests' ids;
- clients that lost their request (a connection error, only ever from the killed replica)
  retry on a surviving replica, or on the killed one once restarted, and get their credit;
- the killed replica, started again on the same database with no manual step, serves
  verifies and new purchases at once;
- in the end every payment is credited exactly once (one purchase ledger transaction, one
  `confirmed` attempt, one audit record; no credit announced twice), balances equal the
  entries and the ledger sums to zero; the survivors still stop cleanly (exit 0, clean logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.e2e.facts import new_user
from tests.e2e.fault_checks import assert_exactly_once, assert_nothing_from, observer, summary
from tests.e2e.faults import (
    Outcome,
    Paid,
    Tally,
    background,
    buy,
    pending,
    scale,
    settle,
    users_for,
    verify_once,
)
from tests.e2e.faulty_rpc import FaultyRpc, running_faulty_rpc
from tests.e2e.harness import Chain, Service, enter_concurrently, killable_service, running_chain
from tests.e2e.procs import wait_until

REPLICAS = 3
HELD_PER_ROUND = 3  # verifies caught inside the credit per kill
AT_RPC_PER_ROUND = 2  # verifies caught waiting on the victim's RPC per kill


@pytest.fixture(scope="module")
async def kill_chain(
    http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path_factory.mktemp("kill-faults-chain"), http) as chain:
        yield chain


@contextlib.asynccontextmanager
async def credits_held(pool: asyncpg.Pool, users: list[str]) -> AsyncIterator[int]:
    """Lock these users' cached balance rows: a credit for them then waits inside its
    transaction, after its ledger rows, at the balance update. Yields the locker's pid."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            locked = await conn.fetch(
                "SELECT user_id FROM user_balances WHERE user_id = ANY($1) FOR UPDATE", users
            )
            assert len(locked) == len(users), locked
            yield int(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await tx.rollback()


async def waiting_in_credit(pool: asyncpg.Pool, locker: int) -> list[int]:
    rows = await pool.fetch(
        """SELECT pid FROM pg_stat_activity
           WHERE $1 = ANY(pg_blocking_pids(pid)) AND query ILIKE '%payops_credit_purchase%'""",
        locker,
    )
    return [int(r["pid"]) for r in rows]


async def credits_in_flight(service: Service) -> int:
    """The service's purchase credits handed to the database and not answered yet."""
    async with service.session.get(f"{service.url}/metrics") as resp:
        text = await resp.text()
    [line] = [x for x in text.splitlines() if x.startswith("payops_credits_in_flight ")]
    return int(float(line.split()[1]))


@dataclass
class Cluster:
    """The replicas (each behind its own RPC proxy), the clients' tally, what was lost."""

    chain: Chain
    http: aiohttp.ClientSession
    database_url: str
    workdir: Path
    stack: contextlib.AsyncExitStack[bool | None]
    pool: asyncpg.Pool
    proxies: list[FaultyRpc]
    replicas: list[Service]
    tally: Tally = field(default_factory=Tally)
    turns: itertools.count[int] = field(default_factory=itertools.count)
    lost: list[str] = field(default_factory=list)  # ids of requests killed inside a credit
    fresh: list[Paid] = field(default_factory=list)  # bought on a restarted replica
    killed_at_rpc: int = 0
    killed_pids: set[int] = field(default_factory=set)  # marked before the SIGKILL is sent

    def survivable(self, outcome: Outcome) -> bool:
        """Credited; or no answer from a replica the test killed (never from a survivor);
        or a clean 202 if the chain was slow."""
        if outcome.settled or pending(outcome, "rpc_unavailable"):
            return True
        return (
            outcome.status is None
            and outcome.label.startswith("connection error")
            and outcome.service.proc.pid in self.killed_pids
        )

    def pick(self) -> Service:
        """The clients' load balancer: round robin, dead or alive."""
        return self.replicas[next(self.turns) % len(self.replicas)]

    async def kill_mid_request(self, victim: int, held: list[Paid], load: list[Paid]) -> None:
        """Kill replica `victim` with `held` inside their credits and some of `load` at its
        RPC; check nothing was left behind; restart it; let the clients finish."""
        async with contextlib.AsyncExitStack() as tasks:
            orphans = await self._kill(victim, held, load, tasks)
            # The lock is gone: each orphaned backend finishes its statement, finds its
            # client gone, and rolls its transaction back.

            async def orphans_gone() -> bool:
                return not await self.pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", orphans
                )

            await wait_until(orphans_gone, "the killed replica's backends gone", within=10)
            rows = await self.pool.fetch(
                """SELECT i.status, (SELECT count(*) FROM ledger_transactions t
                                     WHERE t.intent_id = i.id) AS ledger
                   FROM purchase_intents i WHERE i.id = ANY($1::uuid[])""",
                [uuid.UUID(p.id) for p in held],
            )
            assert [(x["status"], x["ledger"]) for x in rows] == [("PENDING", 0)] * len(held)
            await assert_nothing_from(self.pool, self.lost)

            # Started again on the same database, nothing else done: it serves at once.
            restarted = await self.stack.enter_async_context(
                killable_service(
                    self.chain,
                    self.database_url,
                    self.workdir / f"r{victim}-{len(self.fresh) + 1}",
                    self.http,
                    PAYOPS_SOLANA_RPC_URL=self.proxies[victim].url,
                )
            )
            self.replicas[victim] = restarted
            [new] = await buy(restarted, self.chain, [new_user("after-kill")])
            assert (await verify_once(restarted, new)).credited
            self.fresh.append(new)

            # The clients whose requests died retry, on a survivor or on the restarted one;
            # the load's clients finish as the stack closes.
            await settle(held, self.pick, self.tally, allowed=self.survivable, within=30)

    async def _kill(
        self,
        victim: int,
        held: list[Paid],
        load: list[Paid],
        tasks: contextlib.AsyncExitStack[bool | None],
    ) -> list[int]:
        """SIGKILL the victim mid-credit and mid-RPC; the orphaned backends' pids."""
        doomed, proxy = self.replicas[victim], self.proxies[victim]
        ids = [uuid.uuid4().hex for _ in held]
        async with credits_held(self.pool, [p.user for p in held]) as locker:
            in_credit = await tasks.enter_async_context(
                background(
                    all_of(
                        verify_once(doomed, p, within=60, request_id=rid)
                        for p, rid in zip(held, ids, strict=True)
                    )
                )
            )

            async def all_in_credit() -> bool:
                # Credits in flight together wait in one transaction (group commit): one
                # backend or several, but every held verify inside the database.
                waiting = await waiting_in_credit(self.pool, locker)
                return bool(waiting) and await credits_in_flight(doomed) == len(held)

            await wait_until(all_in_credit, "the verifies waiting inside the credit", within=10)
            orphans = await waiting_in_credit(self.pool, locker)

            proxy.hold()
            loading = await tasks.enter_async_context(
                background(
                    settle(
                        load, self.pick, self.tally, allowed=self.survivable, within=scale(60, 300)
                    )
                )
            )

            async def at_rpc() -> bool:
                if loading.done():
                    loading.result()
                return proxy.held >= AT_RPC_PER_ROUND

            await wait_until(at_rpc, "verifies waiting on the victim's RPC", within=10)
            self.killed_at_rpc += proxy.held
            # Marked first: its clients may see the connection reset before the process
            # can be reaped.
            self.killed_pids.add(doomed.proc.pid)
            doomed.proc.send(signal.SIGKILL)
            assert await doomed.proc.wait_exit() == -signal.SIGKILL
            proxy.release()
            for p, outcome in zip(held, await in_credit, strict=True):
                assert outcome.status is None, outcome  # no answer: the process died
                self.tally.record(p, outcome, self.survivable(outcome))
            self.lost += ids
        return orphans


async def all_of(outcomes: Iterable[Awaitable[Outcome]]) -> list[Outcome]:
    return list(await asyncio.gather(*outcomes))


async def test_a_replica_killed_mid_credit_loses_and_doubles_nothing(
    kill_chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    chain = kill_chain
    rounds = scale(1, 2 * REPLICAS)  # heavy: every replica is killed twice
    async with contextlib.AsyncExitStack() as stack:
        proxies = [
            await stack.enter_async_context(running_faulty_rpc(chain.info.rpc_url))
            for _ in range(REPLICAS)
        ]
        pool = await stack.enter_async_context(observer(database_url))
        replicas = await enter_concurrently(
            stack,
            [
                killable_service(
                    chain,
                    database_url,
                    tmp_path / f"r{i}-0",
                    http,
                    PAYOPS_SOLANA_RPC_URL=proxies[i].url,
                )
                for i in range(REPLICAS)
            ],
        )
        cluster = Cluster(chain, http, database_url, tmp_path, stack, pool, proxies, replicas)

        # Users whose credits get caught need a balance row to lock: a first purchase each,
        # credited before the faults.
        held_users = [new_user("held") for _ in range(rounds * HELD_PER_ROUND)]
        first = await buy(replicas[0], chain, held_users)
        for p in first:
            assert (await verify_once(replicas[0], p)).credited
        held_paid = await buy(replicas[0], chain, held_users)
        load_paid = await buy(replicas[0], chain, users_for("kill-load", scale(45, 240)))

        for r in range(rounds):
            await cluster.kill_mid_request(
                r % REPLICAS,
                held_paid[r * HELD_PER_ROUND : (r + 1) * HELD_PER_ROUND],
                load_paid[r::rounds],
            )

        tally = cluster.tally
        tally.assert_clean()
        lost_answers = sum(n for label, n in tally.answers.items() if "connection error" in label)
        assert lost_answers >= rounds * (HELD_PER_ROUND + AT_RPC_PER_ROUND), tally.answers
        await assert_exactly_once(pool, [*first, *held_paid, *load_paid, *cluster.fresh])
    summary(
        "sigkill_replica",
        started,
        tally,
        replicas=REPLICAS,
        kills=rounds,
        intents=len(first) + len(held_paid) + len(load_paid) + len(cluster.fresh),
        killed_inside_credit=len(cluster.lost),
        killed_waiting_on_rpc=cluster.killed_at_rpc,
    )
