"""The recovery sweep against a real local chain: payments nobody verified are found by their
reference and credited once; unpaid intents expire past the SLA; late or refused payments are
never credited; an unreachable RPC changes nothing."""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core import ledger, purchases
from core import purchases as recovery
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.chain.solana_verifier import SolanaVerifier
from core.gate import SwitchName, set_switch
from core.purchases import Intent
from tests.chain_rig import GRACE, Rig

pytestmark = pytest.mark.timeout(60)


async def _facts(pool: asyncpg.Pool, intent: Intent) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT i.status, i.tx_signature, i.reject_code,
                  (SELECT count(*) FROM ledger_transactions t WHERE t.intent_id = i.id) AS credits
           FROM purchase_intents i WHERE i.id = $1""",
        intent.id,
    )
    assert row is not None
    attempts = await pool.fetch(
        "SELECT source, outcome, code FROM verification_attempts WHERE intent_id = $1 ORDER BY id",
        intent.id,
    )
    return {
        **dict(row.items()),
        "attempts": [(a["source"], a["outcome"], a["code"]) for a in attempts],
        "balance": await ledger.balance(pool, intent.user_id),
    }


async def test_sweep_credits_an_unverified_payment_exactly_once(rig: Rig) -> None:
    intent = await rig.intent("ursula", credits=4)
    signature = await rig.pay(intent)  # and nobody ever calls verify

    first = await rig.sweep()
    second = await rig.sweep()

    assert first.credited == [(intent.id, signature)]
    assert first.stopped is None
    assert second.credited == []
    facts = await _facts(rig.pool, intent)
    assert facts["status"] == "CONFIRMED"
    assert facts["tx_signature"] == signature
    assert facts["credits"] == 1
    assert facts["balance"] == 4
    assert facts["attempts"] == [("recovery", "confirmed", None)]
    audit = await rig.pool.fetchrow(
        "SELECT actor, source FROM audit_log WHERE action = 'intent.confirm' AND subject = $1",
        f"intent:{intent.id}",
    )
    assert audit is not None
    assert (audit["actor"], audit["source"]) == ("recovery", "scheduler")
    assert (await ledger.health(rig.pool)).ok


async def test_concurrent_sweeps_credit_once(rig: Rig) -> None:
    intent = await rig.intent("victor", credits=2)
    signature = await rig.pay(intent)

    reports = await asyncio.gather(*(rig.sweep() for _ in range(4)))

    assert sum(len(r.credited) for r in reports) == 1
    facts = await _facts(rig.pool, intent)
    assert facts["status"] == "CONFIRMED"
    assert facts["tx_signature"] == signature
    assert facts["credits"] == 1
    assert facts["balance"] == 2
    outcomes = [outcome for _, outcome, _ in facts["attempts"]]
    assert outcomes.count("confirmed") == 1
    assert set(outcomes) <= {"confirmed", "duplicate"}
    assert (await ledger.health(rig.pool)).ok


async def test_a_verify_racing_the_sweep_credits_once(rig: Rig) -> None:
    intent = await rig.intent("wendy", credits=5)
    signature = await rig.pay(intent)

    async def verify() -> object:
        return await purchases.verify_intent(
            rig.services, Actor("wendy", "api"), intent.id, signature
        )

    results = await asyncio.gather(rig.sweep(), verify(), rig.sweep(), verify())

    assert all(not isinstance(r, BaseException) for r in results)
    facts = await _facts(rig.pool, intent)
    assert facts["credits"] == 1
    assert facts["balance"] == 5


async def test_stale_unpaid_intents_expire_and_fresh_ones_wait(rig: Rig) -> None:
    stale = await rig.intent("xavier", age=timedelta(hours=2))
    fresh = await rig.intent("xavier")

    report = await rig.sweep()

    assert report.expired == [stale.id]
    assert (await _facts(rig.pool, stale))["status"] == "EXPIRED"
    assert (await _facts(rig.pool, fresh))["status"] == "PENDING"
    audit = await rig.pool.fetchrow(
        "SELECT actor, source, before, after FROM audit_log WHERE action = 'intent.expire'"
    )
    assert audit is not None
    assert audit["before"] == {"status": "PENDING"}
    assert audit["after"]["status"] == "EXPIRED"
    assert (audit["actor"], audit["source"]) == ("recovery", "scheduler")
    # Nothing was paid: no attempt is recorded for either.
    assert await rig.pool.fetchval("SELECT count(*) FROM verification_attempts") == 0
    # Both were looked up; the fresh one is kept for the next sweep.
    checked = await rig.pool.fetch(
        "SELECT intent_id, checks, last_outcome FROM intent_recovery ORDER BY last_outcome"
    )
    assert {(r["intent_id"], r["last_outcome"]) for r in checked} == {
        (stale.id, "expire"),
        (fresh.id, "keep"),
    }


async def test_a_payment_after_the_grace_period_is_not_credited(rig: Rig) -> None:
    # Created two hours ago: it expired after 15 minutes, the grace ended 10 minutes later.
    late = await rig.intent("yolanda", credits=6, age=timedelta(hours=2))
    signature = await rig.pay(late)

    report = await rig.sweep()
    again = await rig.sweep()

    assert report.credited == []
    assert report.rejected == [(late.id, "paid_after_expiry")]
    assert again.checked == 0
    facts = await _facts(rig.pool, late)
    assert facts["status"] == "REJECTED"
    assert facts["reject_code"] == "paid_after_expiry"
    assert facts["credits"] == 0
    assert facts["balance"] == 0
    assert facts["attempts"] == [("recovery", "rejected", "paid_after_expiry")]
    assert signature not in {
        r["purchase_signature"] for r in await rig.pool.fetch("SELECT * FROM ledger_transactions")
    }


async def test_an_underpayment_found_by_reference_is_refused_and_leaves_the_intent_open(
    rig: Rig,
) -> None:
    intent = await rig.intent("zoe", credits=3)
    await rig.pay(intent, amount=intent.amount - 1)

    report = await rig.sweep()

    assert report.credited == []
    assert report.rejected == []  # not past its deadline: a top-up may still come
    facts = await _facts(rig.pool, intent)
    assert (facts["status"], facts["credits"], facts["balance"]) == ("PENDING", 0, 0)
    assert facts["attempts"] == [("recovery", "rejected", "underpaid")]


async def test_an_underpaid_intent_past_its_deadline_is_rejected_not_credited(rig: Rig) -> None:
    intent = await rig.intent("zack", credits=3, age=timedelta(hours=3))
    await rig.pay(intent, amount=intent.amount - 1)

    report = await rig.sweep()

    assert report.credited == []
    assert [code for _, code in report.rejected] in (["underpaid"], ["paid_after_expiry"])
    facts = await _facts(rig.pool, intent)
    assert (facts["status"], facts["credits"], facts["balance"]) == ("REJECTED", 0, 0)


def _dead_rpc_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


async def test_rpc_down_stops_the_sweep_and_changes_nothing(rig: Rig) -> None:
    paid = await rig.intent("adam", credits=2)
    await rig.pay(paid)
    stale = await rig.intent("adam", age=timedelta(hours=2))
    async with SolanaRpc(_dead_rpc_url(), timeout_seconds=1, max_retries=0) as dead:
        down = replace(rig.services, verifier=SolanaVerifier(dead, grace=GRACE))
        report = await recovery.sweep(down, dead, now=datetime.now(UTC))

    assert report.stopped is not None
    assert report.stopped.startswith("rpc unavailable")
    assert "stopped early" in report.summary()
    assert (report.checked, report.credited, report.expired) == (0, [], [])
    for intent in (paid, stale):
        facts = await _facts(rig.pool, intent)
        assert (facts["status"], facts["credits"], facts["attempts"]) == ("PENDING", 0, [])
    assert await rig.pool.fetchval("SELECT count(*) FROM intent_recovery") == 0
    assert (
        await rig.pool.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'intent.%'")
        == 2  # the two creations only
    )

    # The node is back: the next sweep does it all.
    report = await rig.sweep()
    assert [i for i, _ in report.credited] == [paid.id]
    assert report.expired == [stale.id]


async def test_closed_gate_sweeps_nothing(rig: Rig) -> None:
    intent = await rig.intent("bella")
    await rig.pay(intent)
    stale = await rig.intent("bella", age=timedelta(hours=2))
    async with rig.pool.acquire() as conn:
        await set_switch(
            conn, SwitchName.VERIFY, is_open=False, reason="incident", actor=Actor("op", "cli")
        )

    report = await rig.sweep()

    assert report.stopped is not None
    assert "gate" in report.stopped
    for i in (intent, stale):
        assert (await _facts(rig.pool, i))["status"] == "PENDING"


async def test_batch_takes_never_checked_then_least_recently_checked(rig: Rig) -> None:
    made = [await rig.intent(f"u{n}", age=timedelta(minutes=30 - n)) for n in range(3)]
    now = datetime.now(UTC)
    first = await recovery.sweep(rig.services, rig.rpc, now=now, batch=2)
    second = await recovery.sweep(rig.services, rig.rpc, now=now + timedelta(seconds=1), batch=2)
    rows = await rig.pool.fetch("SELECT intent_id, checks FROM intent_recovery")
    checks = {r["intent_id"]: r["checks"] for r in rows}

    assert (first.checked, second.checked) == (2, 2)
    # Oldest two first; then the one never checked, and the least recently checked.
    assert checks == {made[0].id: 2, made[1].id: 1, made[2].id: 1}


async def test_expired_adjustments_are_closed(rig: Rig) -> None:
    from core import adjustments
    from core.adjustments import AdjustmentPolicy, new_request

    policy = AdjustmentPolicy(managers=frozenset(), two_approvals_above=100, ttl=timedelta(hours=1))
    async with rig.pool.acquire() as conn:
        adj = await adjustments.create(
            conn,
            Actor("op", "cli"),
            new_request(
                user_id="carl",
                credits=5,
                reason="missing credit",
                policy=policy,
                now=datetime.now(UTC) - timedelta(hours=2),
                refs=[str(uuid.uuid4())],
            ),
        )
    async with rig.pool.acquire() as conn:
        expired = await adjustments.expire_due(conn, datetime.now(UTC))
    assert [a.id for a in expired] == [adj.id]
    assert (
        await rig.pool.fetchval("SELECT status FROM adjustments WHERE id = $1", adj.id) == "EXPIRED"
    )


async def test_dust_before_and_after_a_payment_cannot_hide_it_from_the_sweep(rig: Rig) -> None:
    victim = await rig.intent("vlad", credits=2)
    template = {
        "token_program": victim.token_program,
        "mint": victim.mint,
        "recipient": victim.recipient,
        "amount": "1",
        "reference": victim.reference,
    }

    async def dust(n: int) -> None:
        sig = await rig.wallet.pay(template, decimals=rig.info.decimals, memo=f"dust {n}")
        await rig.wallet.wait_finalized(sig)

    for n in range(8):
        await dust(n)
    real = await rig.pay(victim)
    for n in range(8, 16):
        await dust(n)

    # Pages of 5: the real payment is on none of the first three pages read back.
    report = await recovery.sweep(rig.services, rig.rpc, now=datetime.now(UTC), page=5)

    assert report.credited == [(victim.id, real)]
    facts = await _facts(rig.pool, victim)
    assert (facts["status"], facts["credits"], facts["balance"]) == ("CONFIRMED", 1, 2)
