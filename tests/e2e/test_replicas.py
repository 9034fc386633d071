"""Three `payops serve` replicas on one database and one chain, hammered at once.

What it proves: with every request spread over three processes that share only PostgreSQL,

- each payment (a real SPL transfer on the local chain, finalized) credits its intent exactly
  once, however many times and on however many replicas it is verified at the same moment;
- a signature sent to other intents at the same time is refused with a stable code and
  credits nothing else;
- a debit replayed with its `Idempotency-Key` on every replica at once applies once; two
  debits racing for the same credits never both apply; an overdraft is always refused and
  no balance ever goes below zero;
- an adjustment approved by its managers' buttons, clicked on every replica at once, applies
  once, with one audit record, and a non-manager's click is refused;

and afterwards the database holds exactly the money the test's own model says: one ledger
transaction per signature, every transaction and the whole ledger summing to zero, cached
balances equal to their entries, each user's balance equal to purchases - debits + approved
adjustments, every intent CONFIRMED (paid) or PENDING (never paid); a full reconciliation
(`payops ops recon`, the real CLI) stores a run with zero drift, and `payops audit verify`
finds the audit chain intact. Meanwhile the replicas run their scheduler (a reconciliation
every 2 s on whichever replica wins the tick), and on exit each replica must stop
cleanly with no error in its logs.

`PAYOPS_TEST_HEAVY=1` runs ten times more (`replicas.replica_size`); `pytest -s` prints the
run's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.auth import mint_token
from api.routes_ops import OPERATOR_SCOPE
from core import audit, ledger, recon
from core.recon import Finding, ReconTotals
from tests.e2e.harness import (
    JWT_SECRET,
    enter_concurrently,
    running_chain,
    running_service,
    service_env,
)
from tests.e2e.procs import spawn
from tests.e2e.replica_storms import (
    REPLICAS,
    SIZE,
    await_adjustments,
    build_plan,
    storm_a,
    storm_b,
)
from tests.e2e.replicas import (
    ALERTS_CHANNEL,
    APPROVALS_CHANNEL,
    DEBIT_SERVICE,
    MANAGER,
    MANAGER2,
    ONCALL,
    TWO_APPROVALS_ABOVE,
    Cluster,
    Plan,
    summary,
)
from tests.slack_fake import BOT_TOKEN, SIGNING_SECRET, FakeSlack

SEED = int(os.environ.get("PAYOPS_TEST_SEED", "6"))

pytestmark = pytest.mark.timeout(SIZE.timeout_seconds)


def slack_settings(fake: FakeSlack) -> dict[str, str]:
    return {
        "PAYOPS_SLACK_API_URL": fake.api_url(),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "PAYOPS_SLACK_ONCALL": ONCALL,
        "PAYOPS_SLACK_MANAGERS": f"{MANAGER},{MANAGER2}",
        "PAYOPS_SLACK_APPROVALS_CHANNEL": APPROVALS_CHANNEL,
        "PAYOPS_SLACK_ALERTS_CHANNEL": ALERTS_CHANNEL,
        "PAYOPS_ADJUST_TWO_APPROVALS_ABOVE": str(TWO_APPROVALS_ABOVE),
    }


def replica_settings(fake: FakeSlack) -> dict[str, str]:
    return slack_settings(fake) | {
        # The chain is slow under this load, not down: no 202 rpc_unavailable wanted here.
        "PAYOPS_RPC_TIMEOUT_SECONDS": "10",
        "PAYOPS_RPC_MAX_RETRIES": "2",
        "PAYOPS_DB_POOL_MAX_SIZE": "10",
        # This database is the test's own: the replicas run their scheduler, a reconciliation
        # every 2 s on whichever replica takes the tick, racing the load. The recovery sweep
        # is kept off the intents, and so is the treasury watcher (either would credit them
        # before the verifies race; the watcher's own replica test is test_detection.py).
        "PAYOPS_SCHEDULER_ENABLED": "true",
        "PAYOPS_RECONCILE_INTERVAL_SECONDS": "2",
        "PAYOPS_RECOVERY_MIN_AGE_SECONDS": "86400",
        "PAYOPS_WATCH_ENABLED": "false",
    }


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """One chain, one database, three `payops serve` with Slack pointed at a fake Slack API."""
    fake = FakeSlack()
    await fake.start()
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            ) as session,
            running_chain(tmp_path / "chain", session) as chain,
            contextlib.AsyncExitStack() as stack,
        ):
            services = await enter_concurrently(
                stack,
                [
                    running_service(
                        chain,
                        database_url,
                        tmp_path / f"replica-{n}",
                        session,
                        **replica_settings(fake),
                    )
                    for n in range(REPLICAS)
                ],
            )
            yield Cluster(services, fake, session)
    finally:
        await fake.close()


# --- what the database holds afterwards -------------------------------------------------------


async def assert_database(pool: asyncpg.Pool, plan: Plan) -> dict[str, Any]:
    """One credit per payment, nothing for the replays, the ledger's invariants, the model."""
    owner_of = plan.owner_of()
    intents = {
        str(r["id"]): r
        for r in await pool.fetch("SELECT id, user_id, status, tx_signature FROM purchase_intents")
    }
    assert set(intents) == set(owner_of)
    assert all(intents[iid]["user_id"] == owner.user for iid, owner in owner_of.items())
    purchases = await pool.fetch(
        """SELECT intent_id, purchase_signature, count(*) OVER (PARTITION BY purchase_signature) AS per_sig
           FROM ledger_transactions WHERE kind = 'purchase'"""
    )
    by_intent = Counter(str(r["intent_id"]) for r in purchases)
    credited = {str(r["intent_id"]): r["purchase_signature"] for r in purchases}
    assert all(r["per_sig"] == 1 for r in purchases)
    confirmations = Counter(
        str(r["intent_id"])
        for r in await pool.fetch(
            "SELECT intent_id FROM verification_attempts WHERE outcome = 'confirmed'"
        )
    )
    audited = Counter(
        r["subject"]
        for r in await pool.fetch("SELECT subject FROM audit_log WHERE action = 'intent.confirm'")
    )
    for user, intent in plan.paid():
        iid, sig = str(intent["id"]), user.signatures[str(intent["id"])]
        row = intents[iid]
        assert (row["status"], row["tx_signature"]) == ("CONFIRMED", sig), dict(row)
        assert by_intent[iid] == 1
        assert credited[iid] == sig
        assert confirmations[iid] == 1
        assert audited[f"intent:{iid}"] == 1
    for user in plan.users:
        iid = str(user.unpaid["id"])
        row = intents[iid]
        assert (row["status"], row["tx_signature"]) == ("PENDING", None), dict(row)
        assert by_intent[iid] == 0
        assert confirmations[iid] == 0
    assert len(purchases) == len(plan.paid())

    # The ledger: zero-sum overall and per transaction, cached balances equal their entries.
    health = await ledger.health(pool)
    assert health.ok, health
    rows = await pool.fetch(
        """SELECT a.user_id, coalesce(b.balance, 0) AS cached,
                  coalesce((SELECT sum(e.amount) FROM ledger_entries e WHERE e.account_id = a.id), 0)
                    AS entries
           FROM accounts a LEFT JOIN user_balances b ON b.account_id = a.id
           WHERE a.kind = 'user'"""
    )
    balances = {r["user_id"]: (int(r["cached"]), int(r["entries"])) for r in rows}
    for user in plan.users:
        assert balances[user.user] == (user.expected_balance, user.expected_balance), (
            user.user,
            balances[user.user],
            user.expected_balance,
        )
    assert all(cached >= 0 for cached, _ in balances.values())

    # Debits: one ledger transaction per applied key, none for a refused one.
    keys = Counter(
        (r["idempotency_principal"], r["idempotency_value"])
        for r in await pool.fetch(
            """SELECT idempotency_principal, idempotency_value FROM ledger_transactions
               WHERE kind = 'debit' AND idempotency_scope = 'debit'"""
        )
    )
    for user in plan.users:
        for key in user.safe_keys:
            assert keys[DEBIT_SERVICE, key] == 1
        assert sorted(keys[DEBIT_SERVICE, k] for k in user.race_keys) == [0, 1]
        assert all(keys[DEBIT_SERVICE, k] == 0 for k in user.overdraft_keys)
    assert sum(keys.values()) == len(plan.users) * (len(plan.users[0].safe_keys) + 1)

    # Adjustments: applied once each, by the right managers, with one audit note.
    for adj in plan.adjustments():
        row = await pool.fetchrow(
            "SELECT status, applied_ledger_tx FROM adjustments WHERE id = $1", adj.id
        )
        assert row is not None
        assert row["status"] == "APPLIED", (adj, row)
        txs = await pool.fetch(
            """SELECT t.id, e.amount FROM ledger_transactions t
               JOIN ledger_entries e ON e.transaction_id = t.id
               JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
               WHERE t.idempotency_scope = 'adjustment' AND t.idempotency_value = $1""",
            str(adj.id),
        )
        assert [(r["id"], r["amount"]) for r in txs] == [(row["applied_ledger_tx"], adj.credits)]
        decisions = await pool.fetch(
            "SELECT approver, decision FROM adjustment_decisions WHERE adjustment_id = $1", adj.id
        )
        assert sorted((r["approver"], r["decision"]) for r in decisions) == sorted(
            (m, "approve") for m in adj.approvers
        )
        notes = await pool.fetch(
            "SELECT actor, source, after FROM audit_log WHERE action = 'adjustment.apply' "
            "AND subject = $1",
            f"adjustment:{adj.id}",
        )
        assert len(notes) == 1
        assert notes[0]["actor"] in adj.approvers
        assert notes[0]["source"] == "slack"

    return {
        "intents": len(intents),
        "purchase_credits": sum(u.purchased for u in plan.users),
        "adjusted_credits": sum(u.adjusted for u in plan.users),
        "debited_credits": sum(u.expected_debits for u in plan.users),
        "balances_sum": sum(cached for cached, _ in balances.values()),
        "ledger_transactions": int(await pool.fetchval("SELECT count(*) FROM ledger_transactions")),
        "ledger_total": health.total,
        "verification_attempts": dict(
            Counter(
                r["outcome"] for r in await pool.fetch("SELECT outcome FROM verification_attempts")
            )
        ),
    }


async def payops(cluster: Cluster, database_url: str, workdir: Path, *args: str) -> str:
    """Run the `payops` CLI against the replicas' database and chain (`payops ops`: on the
    first replica, with ONCALL's operator token); its stdout."""
    chain = cluster.services[0].chain
    env = service_env(chain.info, database_url, workdir, **slack_settings(cluster.fake))
    env["PAYOPS_SERVICE_URL"] = cluster.services[0].url
    env["PAYOPS_OPERATOR_TOKEN"] = mint_token(JWT_SECRET, ONCALL, scopes=(OPERATOR_SCOPE,))
    command = [sys.executable, "-m", "payops.cli", *args]
    proc = spawn("payops-" + args[-1], command, workdir, env)
    code = await proc.wait_exit(within=120)
    assert code == 0, f"payops {' '.join(args)} exited with {code}\n{proc.tail()}"
    return proc.stdout.read_text()


@dataclass(frozen=True)
class StoredRun:
    """A reconciliation run as stored, with the findings open after it."""

    id: int
    mode: str
    totals: ReconTotals
    drift_credits: int
    drift_tokens: int
    zero_drift: bool
    chain_checked: bool
    findings: list[Finding]

    @property
    def blocking_findings(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]


async def cli_run(pool: asyncpg.Pool) -> StoredRun:
    """The run `payops ops --as ONCALL recon` stored (the replicas' scheduled runs are
    stored too, before and after it)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        rows = await conn.fetch(
            """SELECT id, mode, totals, drift_credits, drift_tokens, zero_drift, chain_checked
               FROM recon_runs WHERE source = 'cli' AND actor = $1""",
            ONCALL,
        )
        assert len(rows) == 1, [dict(r) for r in rows]
        [row] = rows
        still_open, _, _ = await recon.findings_of(conn, row["id"])
    totals = row["totals"]
    return StoredRun(
        id=row["id"],
        mode=row["mode"],
        totals=ReconTotals.from_json(json.loads(totals) if isinstance(totals, str) else totals),
        drift_credits=int(row["drift_credits"]),
        drift_tokens=int(row["drift_tokens"]),
        zero_drift=row["zero_drift"],
        chain_checked=row["chain_checked"],
        findings=still_open,
    )


# --- the test ---------------------------------------------------------------------------------


async def test_three_replicas_credit_debit_and_approve_exactly_once(
    cluster: Cluster, database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    pool = cluster.services[0].pool
    started = time.monotonic()

    plan = await build_plan(cluster, rng)
    setup = time.monotonic() - started
    a = await storm_a(cluster, plan, rng)
    await await_adjustments(cluster, plan, pool)
    for user in plan.users:  # storm B starts from the purchases only
        assert await ledger.balance(pool, user.user) == user.purchased
    b = await storm_b(cluster, plan, rng)

    reads = await asyncio.gather(
        *(cluster.balance(rng.randrange(REPLICAS), u.user) for u in plan.users)
    )
    assert reads == [u.expected_balance for u in plan.users]
    money = await assert_database(pool, plan)

    # One after the other: the run's audit record must be in the log `audit verify` seals.
    recon_text = await payops(
        cluster, database_url, tmp_path / "cli-recon", "ops", "--as", ONCALL, "recon"
    )
    # The replicas' jobs may write records while `audit verify` runs (they are then
    # unsealed): every record committed before it started must be sealed.
    written_before = await pool.fetchval("SELECT count(*) FROM audit_log")
    audit_text = await payops(cluster, database_url, tmp_path / "cli-audit", "audit", "verify")
    run = await cli_run(pool)
    report = json.loads(audit_text.strip().splitlines()[-1])
    jobs = await pool.fetch(
        "SELECT job, outcome, count(*) AS n, count(DISTINCT replica) AS replicas "
        "FROM job_runs GROUP BY job, outcome ORDER BY job, outcome"
    )
    findings = Counter(f"{f.kind} ({f.severity})" for f in run.findings)
    print(  # the figures first: a failure below still shows them with `pytest -s`
        summary(
            {
                "size": SIZE.name,
                "replicas": REPLICAS,
                "users": SIZE.users,
                "paid_intents": len(plan.paid()),
                "seconds": {
                    "setup (create + pay on chain)": round(setup, 2),
                    "storm A": a["wall_seconds"],
                    "storm B": b["wall_seconds"],
                    "total": round(time.monotonic() - started, 2),
                },
                "requests": cluster.tally.to_json(),
                "storm A replays to other intents": a["cross_refusals"],
                "storm B refused clicks": b["click_refusals"],
                "money": money,
                "reconciliation": {
                    "run": run.id,
                    "mode": run.mode,
                    "chain_checked": run.chain_checked,
                    "zero_drift": run.zero_drift,
                    "drift_credits": run.drift_credits,
                    "drift_tokens": run.drift_tokens,
                    "expected_credits": run.totals.expected_credits,
                    "applied_credits": run.totals.applied_credits,
                    "open_findings": dict(findings),
                },
                "audit verify": report,
                "scheduled job runs": {
                    f"{r['job']} {r['outcome']}": f"{r['n']} on {r['replicas']} replica(s)"
                    for r in jobs
                },
            }
        )
    )

    # A full run of the reconciliation `payops ops recon` runs: zero drift, chain checked.
    blocking = [(f.kind, f.severity, f.detail) for f in run.blocking_findings]
    assert blocking == [], blocking
    assert run.mode == "full"
    assert run.chain_checked
    assert (run.drift_credits, run.drift_tokens, run.zero_drift) == (0, 0, True)
    assert "ZERO DRIFT" in recon_text, recon_text
    assert run.totals.confirmed_intents == run.totals.purchase_transactions == len(plan.paid())
    assert run.totals.expected_credits == run.totals.applied_credits == money["purchase_credits"]
    assert run.totals.received_tokens == run.totals.expected_tokens
    assert run.totals.ledger_total == 0
    # `payops audit verify`: every row sealed into the hash chain, nothing modified or missing.
    assert report["ok"] is True, audit_text
    assert report["problems"] == [], audit_text
    assert report["rows"] == report["sealed"] + report["unsealed"], audit_text
    assert report["sealed"] >= written_before > 0, audit_text
    async with pool.acquire() as conn:
        chain_report = await audit.verify_chain(conn)
    assert chain_report.ok, chain_report
    # The replicas' scheduled jobs ran (one replica per tick) and none failed.
    assert all(r["outcome"] != "failed" for r in jobs), [dict(r) for r in jobs]
