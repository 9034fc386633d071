"""A model-based test: random sequences of purchases, verifies, duplicates, replays, debits,
adjustments and reversals against real PostgreSQL, checked against a simple model of the
balances and against the ledger's invariants after every step."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from core import adjustments, db, ledger, purchases
from core import ledger as ledger_db
from core.adjustments import AdjustmentPolicy, DecisionKind, new_request
from core.audit import Actor
from core.errors import Conflict, PayopsError, Unprocessable
from core.services import Services
from tests.support import ScriptedVerifier, build_services, signature

USERS = ("ann", "ben", "cat")
MANAGERS = frozenset({"m1", "m2"})
POLICY = AdjustmentPolicy(managers=MANAGERS, two_approvals_above=50, ttl=timedelta(hours=1))
# PAYOPS_TEST_HEAVY=1 runs the heavy variants of the suite: here 100 examples, not 10.
EXAMPLES = int(
    os.environ.get("PAYOPS_MODEL_EXAMPLES")
    or ("100" if os.environ.get("PAYOPS_TEST_HEAVY") == "1" else "10")
)

# Runs under its own event loop (Hypothesis drives rules synchronously).
_TABLES = (
    "adjustment_decisions, adjustments, incident_notes, incidents, smoke_runs, "
    "verification_attempts, ledger_entries, user_balances, ledger_transactions, "
    "idempotency_keys, purchase_intents, audit_log"
)


class LedgerMachine(RuleBasedStateMachine):
    dsn: str = ""

    intents = Bundle("intents")
    credited = Bundle("credited")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool = self.run(db.create_pool(self.dsn, min_size=2, max_size=10))
        self.svc: Services = build_services(self.pool, ScriptedVerifier())
        self.balances = dict.fromkeys(USERS, 0)
        self.confirmed = 0
        self.reversed: set[int] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def reset() -> None:
            async with self.pool.acquire() as conn:
                # Replica mode switches the append-only triggers off, for the reset only.
                await conn.execute("SET session_replication_role = replica")
                await conn.execute(f"TRUNCATE {_TABLES} CASCADE")
                await conn.execute("DELETE FROM accounts WHERE kind = 'user'")
            await self.pool.close()

        self.run(reset())
        self.loop.close()

    @initialize()
    def start(self) -> None:
        assert self.balances == dict.fromkeys(USERS, 0)

    # --- purchases ------------------------------------------------------------------------

    @rule(target=intents, user=st.sampled_from(USERS), credits=st.integers(1, 40))
    def create_intent(self, user: str, credits: int) -> tuple[str, uuid.UUID, int]:
        async def go() -> uuid.UUID:
            async with self.pool.acquire() as conn:
                intent = await purchases.create_intent(
                    self.svc, conn, Actor(user, "api"), credits=credits, wallet=None
                )
            return intent.id

        return (user, self.run(go()), credits)

    @rule(target=credited, intent=consumes(intents), copies=st.integers(1, 4))
    def pay_and_verify(self, intent: tuple[str, uuid.UUID, int], copies: int) -> Any:
        user, intent_id, credits = intent
        sig = signature()

        async def go() -> list[Any]:
            verify = purchases.verify_intent(self.svc, Actor(user, "api"), intent_id, sig)
            others = [
                purchases.verify_intent(self.svc, Actor(user, "api"), intent_id, sig)
                for _ in range(copies - 1)
            ]
            return list(await asyncio.gather(verify, *others))

        results = self.run(go())
        assert sum(1 for r in results if not r.duplicate) == 1
        self.balances[user] += credits
        self.confirmed += 1
        tx_id = self.run(
            self.pool.fetchval("SELECT id FROM ledger_transactions WHERE intent_id = $1", intent_id)
        )
        return multiple((user, intent_id, credits, sig, tx_id))

    @rule(paid=credited)
    def duplicate_verify(self, paid: tuple[str, uuid.UUID, int, str, int]) -> None:
        user, intent_id, _, sig, _ = paid
        result = self.run(purchases.verify_intent(self.svc, Actor(user, "api"), intent_id, sig))
        assert result.duplicate

    @rule(paid=credited, other=intents)
    def replay_signature(
        self, paid: tuple[str, uuid.UUID, int, str, int], other: tuple[str, uuid.UUID, int]
    ) -> None:
        _, _, _, sig, _ = paid
        user, intent_id, _ = other
        with pytest.raises(Conflict):
            self.run(purchases.verify_intent(self.svc, Actor(user, "api"), intent_id, sig))

    # --- spending and corrections ---------------------------------------------------------

    @rule(user=st.sampled_from(USERS), credits=st.integers(1, 60), repeats=st.integers(1, 3))
    def debit(self, user: str, credits: int, repeats: int) -> None:
        key = uuid.uuid4().hex

        async def go() -> bool:
            applied = False
            for _ in range(repeats):
                async with self.pool.acquire() as conn:
                    try:
                        await ledger.debit(
                            conn,
                            Actor("shop", "api"),
                            user_id=user,
                            credits=credits,
                            reason="t",
                            key=key,
                        )
                        applied = True
                    except Unprocessable:
                        pass
                    except Conflict:
                        pass  # the same key again: the ledger's own guard (409)
            return applied

        enough = self.balances[user] >= credits
        applied = self.run(go())
        assert applied == enough
        if applied:
            self.balances[user] -= credits

    @rule(user=st.sampled_from(USERS), credits=st.integers(-30, 80).filter(bool))
    def adjustment(self, user: str, credits: int) -> None:
        now = datetime.now(UTC)

        async def go() -> None:
            async with self.pool.acquire() as conn:
                request = new_request(
                    user_id=user, credits=credits, reason="model", policy=POLICY, now=now
                )
                adj = await adjustments.create(conn, Actor("oncall", "cli"), request)
                for manager in sorted(MANAGERS)[: adj.approvals_required]:
                    await adjustments.decide(
                        conn, Actor(manager, "cli"), adj.id, DecisionKind.APPROVE, POLICY, now
                    )

        self.run(go())
        self.balances[user] += credits

    @rule(paid=credited)
    def reverse_purchase(self, paid: tuple[str, uuid.UUID, int, str, int]) -> None:
        user, _, credits, _, tx_id = paid
        now = datetime.now(UTC)

        async def go() -> None:
            async with self.pool.acquire() as conn:
                adj = await adjustments.reverse_request(
                    conn, Actor("oncall", "cli"), tx_id, "duplicate", policy=POLICY, now=now
                )
                for manager in sorted(MANAGERS)[: adj.approvals_required]:
                    await adjustments.decide(
                        conn, Actor(manager, "cli"), adj.id, DecisionKind.APPROVE, POLICY, now
                    )

        if tx_id in self.reversed:
            with pytest.raises(PayopsError):
                self.run(go())
            return
        self.run(go())
        self.reversed.add(tx_id)
        self.balances[user] -= credits

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def ledger_holds(self) -> None:
        health = self.run(ledger_db.health(self.pool))
        assert health.ok, health

    @invariant()
    def balances_match_the_model(self) -> None:
        for user, expected in self.balances.items():
            assert self.run(ledger_db.balance(self.pool, user)) == expected, user

    @invariant()
    def one_purchase_credit_per_confirmed_intent(self) -> None:
        row = self.run(
            self.pool.fetchrow(
                """SELECT (SELECT count(*) FROM ledger_transactions WHERE kind = 'purchase') AS credits,
                          (SELECT count(*) FROM purchase_intents WHERE status = 'CONFIRMED') AS confirmed"""
            )
        )
        assert (row["credits"], row["confirmed"]) == (self.confirmed, self.confirmed)


def test_ledger_behaves_like_its_model(database_url: str) -> None:
    LedgerMachine.dsn = database_url
    machine = LedgerMachine.TestCase
    machine.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    machine().runTest()
