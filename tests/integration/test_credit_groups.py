"""Group commit of purchase credits (core/purchases/grouped.py): credits in flight together
share one transaction, each still exactly once; one failing in its group is rolled back
alone and credited on its own; a group failing as a whole writes nothing; two processes'
groups over the same users never deadlock."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from core import db
from core.audit import Actor
from core.chain.verdict import Confirmed
from core.ledger import Posting
from core.purchases import CreditGroups, Intent
from core.purchases import store as intents_db
from core.purchases.credit import credit_call
from core.purchases.credit_metrics import CreditGroupsCollector
from core.purchases.service import create_intent
from core.services import Services
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature


async def _pending(svc: Services, user: str, credits: int = 2) -> Intent:
    async with svc.pool.acquire() as conn:
        return await create_intent(svc, conn, Actor(user, "api"), credits=credits, wallet=None)


def _call(intent: Intent, sig: str | None = None) -> intents_db.CreditCall:
    verdict = Confirmed(received=intent.amount, payer=None, slot=7, block_time=datetime.now(UTC))
    return credit_call(Actor(intent.user_id, "api", "req"), intent, sig or signature(), verdict)


async def _written(pool: asyncpg.Pool, intent_id: uuid.UUID) -> tuple[str, int, int, int]:
    """The intent's status, and its ledger transactions, attempts and confirm records."""
    row = await pool.fetchrow(
        """SELECT i.status,
              (SELECT count(*) FROM ledger_transactions t WHERE t.intent_id = i.id) AS txs,
              (SELECT count(*) FROM verification_attempts a WHERE a.intent_id = i.id) AS tries,
              (SELECT count(*) FROM audit_log l
                WHERE l.subject = 'intent:' || i.id::text AND l.action = 'intent.confirm')
                AS confirms
           FROM purchase_intents i WHERE i.id = $1""",
        intent_id,
    )
    assert row is not None
    return row["status"], row["txs"], row["tries"], row["confirms"]


async def _ledger_sums_to_zero(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger_entries") == 0
    assert (
        await pool.fetchval(
            """SELECT count(*) FROM user_balances b
           WHERE b.balance <> (SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e
                               WHERE e.account_id = b.account_id)"""
        )
        == 0
    )


async def test_verifies_in_flight_together_are_credited_in_groups_each_exactly_once(
    pool: asyncpg.Pool,
) -> None:
    # The chain answers every verify after 50 ms, so their credits arrive together.
    svc = build_services(pool, ScriptedVerifier(delay=0.05), credit_group_max=4)
    users = [f"user-{n}" for n in range(24)] + ["user-0"] * 6  # one user with seven intents
    async with api_client(svc) as client:
        ids = []
        for user in users:
            created = await client.post(
                "/v1/purchase-intents", json={"credits": 3}, headers=bearer(user)
            )
            ids.append((user, (await created.json())["id"]))
        sigs = [signature() for _ in ids]

        async def verify(user: str, intent_id: str, sig: str) -> tuple[int, dict[str, object]]:
            resp = await client.post(
                f"/v1/purchase-intents/{intent_id}/verify",
                json={"signature": sig},
                headers=bearer(user),
            )
            return resp.status, await resp.json()

        answers = await asyncio.gather(
            *(verify(user, i, sig) for (user, i), sig in zip(ids, sigs, strict=True))
        )
        again = await asyncio.gather(
            *(verify(user, i, sig) for (user, i), sig in zip(ids, sigs, strict=True))
        )

    assert [status for status, _ in answers] == [200] * len(ids)
    assert [body["already_credited"] for _, body in answers] == [False] * len(ids)
    assert [body["already_credited"] for _, body in again] == [True] * len(ids)
    assert svc.credits.groups >= 2  # at most 4 in a group: the rest went in others
    assert svc.credits.grouped >= 4
    for _, intent_id in ids:
        assert await _written(pool, uuid.UUID(intent_id)) == ("CONFIRMED", 1, 2, 1)
    assert (
        await pool.fetchval("SELECT balance FROM user_balances WHERE user_id = 'user-0'") == 7 * 3
    )
    await _ledger_sums_to_zero(pool)


async def test_one_credit_failing_in_its_group_is_rolled_back_alone(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier())
    paid = await _pending(svc, "carol")
    used = signature()
    async with pool.acquire() as conn, conn.transaction():
        await intents_db.credit(conn, _call(paid, used))
    a, b, c = [await _pending(svc, user) for user in ("alice", "bob", "dave")]

    async with pool.acquire() as conn, conn.transaction():
        done = await intents_db.credit_group(conn, [_call(b), _call(a, used), _call(c)])

    assert isinstance(done[1], intents_db.CreditError)
    assert (done[1].state, done[1].constraint) == (
        "23505",
        "ledger_transactions_purchase_signature_key",
    )
    for row, intent in ((done[0], b), (done[2], c)):
        assert isinstance(row, intents_db.CreditRow)
        assert row.outcome == "credited"
        assert row.balance == 2
        assert await _written(pool, intent.id) == ("CONFIRMED", 1, 1, 1)
    assert await _written(pool, a.id) == ("PENDING", 0, 0, 0)  # nothing of it written
    await _ledger_sums_to_zero(pool)


async def test_a_group_answers_each_credit_as_the_one_credit_call_would(
    pool: asyncpg.Pool,
) -> None:
    """Duplicate (the same signature again), refused (confirmed by another signature) and
    missing (no such intent), beside a credit."""
    svc = build_services(pool, ScriptedVerifier())
    done_before = await _pending(svc, "erin")
    sig = signature()
    async with pool.acquire() as conn, conn.transaction():
        await intents_db.credit(conn, _call(done_before, sig))
    fresh = await _pending(svc, "frank")
    ghost = replace(fresh, id=uuid.uuid4(), user_id="gina")

    async with pool.acquire() as conn, conn.transaction():
        rows = await intents_db.credit_group(
            conn,
            [_call(done_before, sig), _call(fresh), _call(ghost), _call(done_before)],
        )

    assert [r.outcome for r in rows if isinstance(r, intents_db.CreditRow)] == [
        "duplicate",
        "credited",
        "missing",
        "refused",
    ]
    assert await _written(pool, done_before.id) == ("CONFIRMED", 1, 2, 1)
    assert await _written(pool, fresh.id) == ("CONFIRMED", 1, 1, 1)


async def test_a_group_failing_at_commit_writes_nothing_and_sends_each_back_alone(
    pool: asyncpg.Pool,
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    intents = [await _pending(svc, user) for user in ("hal", "ivy", "jon")]
    calls = [_call(i) for i in intents]
    # unbalanced postings: only the zero-sum check at COMMIT refuses them
    calls[1] = replace(
        calls[1], postings=[Posting("user:ivy", 2), Posting("system:token_sales", -1)]
    )
    groups = CreditGroups()

    with groups.alone():  # a credit in flight: these three wait and go together
        answers = await asyncio.gather(*(groups.credit(pool, c) for c in calls))

    assert answers == [None, None, None]
    assert (groups.groups, groups.sent_alone) == (0, 3)
    for intent in intents:
        assert await _written(pool, intent.id) == ("PENDING", 0, 0, 0)


async def test_a_lost_connection_reaches_every_credit_of_the_group(
    database_url: str, pool: asyncpg.Pool
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    intents = [await _pending(svc, user) for user in ("kim", "lee")]
    gone = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    await gone.close()
    groups = CreditGroups()

    with groups.alone():
        results = await asyncio.gather(
            *(groups.credit(gone, _call(i)) for i in intents), return_exceptions=True
        )

    assert [type(r) for r in results] == [asyncpg.InterfaceError] * 2
    for intent in intents:
        assert await _written(pool, intent.id) == ("PENDING", 0, 0, 0)


async def test_grouping_off_credits_each_on_its_own(pool: asyncpg.Pool) -> None:
    svc = build_services(pool, ScriptedVerifier(), credit_group_max=1)
    intent = await _pending(svc, "max")

    with svc.credits.alone():
        assert await svc.credits.credit(pool, _call(intent)) is None

    assert svc.credits.groups == 0
    assert await _written(pool, intent.id) == ("PENDING", 0, 0, 0)


@pytest.mark.parametrize("seed", [1, 2])
async def test_two_processes_grouping_the_same_users_never_deadlock(
    pool: asyncpg.Pool, seed: int
) -> None:
    """Two replicas' groups credit intents of the same users at once, in shuffled order:
    each group locks its users' rows in user order, so none waits on the other in a cycle
    (a deadlock would roll a credit back in its group: `sent_alone`)."""
    svc = build_services(pool, ScriptedVerifier())
    users = [f"u{n}" for n in range(8)]
    mine = {side: [await _pending(svc, u) for u in users for _ in range(3)] for side in "ab"}
    rng = random.Random(seed)
    for intents in mine.values():
        rng.shuffle(intents)
    replicas = {side: CreditGroups() for side in "ab"}

    async def credit_all(side: str) -> list[intents_db.CreditRow | None]:
        groups = replicas[side]
        with groups.alone():
            return await asyncio.gather(*(groups.credit(pool, _call(i)) for i in mine[side]))

    a, b = await asyncio.gather(credit_all("a"), credit_all("b"))

    assert all(isinstance(r, intents_db.CreditRow) and r.outcome == "credited" for r in a + b)
    assert [g.sent_alone for g in replicas.values()] == [0, 0]
    assert await pool.fetchval("SELECT min(balance) FROM user_balances") == 6 * 2
    await _ledger_sums_to_zero(pool)


async def test_credits_waiting_on_a_lock_are_counted_in_flight_until_answered(
    pool: asyncpg.Pool,
) -> None:
    svc = build_services(pool, ScriptedVerifier())
    users = ("olga", "pia")
    for user in users:  # a first purchase each: a balance row to lock
        first = await _pending(svc, user)
        async with pool.acquire() as conn, conn.transaction():
            await intents_db.credit(conn, _call(first))
    intents = [await _pending(svc, user) for user in users]
    groups = CreditGroups()
    collector = CreditGroupsCollector(groups)

    def scraped() -> dict[str, float]:
        return {s.name: s.value for m in collector.collect() for s in m.samples}

    async with pool.acquire() as locker, locker.transaction():
        await locker.execute(
            "SELECT 1 FROM user_balances WHERE user_id = ANY($1) FOR UPDATE", list(users)
        )
        with groups.alone():  # one credit in flight already: these two go as a group
            waiting = asyncio.gather(*(groups.credit(pool, _call(i)) for i in intents))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"
                ):
                    break
            assert scraped()["payops_credits_in_flight"] == 3
            assert not waiting.done()
    rows = await waiting

    assert [r.outcome for r in rows if r is not None] == ["credited", "credited"]
    assert scraped() == {
        "payops_credits_in_flight": 0,
        "payops_credit_groups_total": 1,
        "payops_credits_grouped_total": 2,
    }


async def test_one_users_credits_in_flight_together_each_go_on_their_own(
    pool: asyncpg.Pool,
) -> None:
    """A group takes one credit per user: a burst of one user's credits has no one to share
    with, so each is credited on its own, and the queue is let go in one pass."""
    svc = build_services(pool, ScriptedVerifier())
    intents = [await _pending(svc, "quinn") for _ in range(40)]
    groups = CreditGroups()

    with groups.alone():
        answers = await asyncio.gather(*(groups.credit(pool, _call(i)) for i in intents))

    assert answers == [None] * 40
    assert (groups.groups, groups.sent_alone, groups.in_flight) == (0, 40, 0)


async def test_a_group_that_times_out_reaches_each_credit_as_the_timeout(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """Asking again one by one would wait as long again: each credit hears the timeout, as
    alone, and nothing of the group is written."""
    svc = build_services(pool, ScriptedVerifier())
    held = await _pending(svc, "rosa")
    async with pool.acquire() as conn, conn.transaction():
        await intents_db.credit(conn, _call(held))  # her balance row, to lock
    intents = [await _pending(svc, user) for user in ("rosa", "sam")]
    impatient = await db.create_pool(database_url, min_size=1, max_size=2, command_timeout=0.3)
    groups = CreditGroups()
    try:
        async with pool.acquire() as locker, locker.transaction():
            await locker.execute("SELECT 1 FROM user_balances WHERE user_id = 'rosa' FOR UPDATE")
            with groups.alone():
                results = await asyncio.gather(
                    *(groups.credit(impatient, _call(i)) for i in intents), return_exceptions=True
                )
    finally:
        await impatient.close()

    assert [type(r) for r in results] == [TimeoutError, TimeoutError]
    assert groups.sent_alone == 0
    for intent in intents:
        assert await _written(pool, intent.id) == ("PENDING", 0, 0, 0)
