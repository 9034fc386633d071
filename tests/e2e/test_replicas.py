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

from core import audit, ledger_db, recon_store
from core.recon_rules import Finding
from core.recon_totals import ReconTotals
from tests.e2e.harness import (
    Answer,
    Chain,
    enter_concurrently,
    new_user,
    running_chain,
    running_service,
    service_env,
    spawn,
    wait_until,
)
from tests.e2e.replicas import (
    ALERTS_CHANNEL,
    APPROVALS_CHANNEL,
    DEBIT_SERVICE,
    MANAGER,
    MANAGER2,
    ONCALL,
    TWO_APPROVALS_ABOVE,
    Adjust,
    Burst,
    Cluster,
    Plan,
    UserPlan,
    replica_size,
    run_bursts,
    summary,
    together,
)
from tests.slack_fake import BOT_TOKEN, SIGNING_SECRET, FakeSlack

SIZE = replica_size()
REPLICAS = 3
SEED = int(os.environ.get("PAYOPS_TEST_SEED", "6"))
WAIT_SECONDS = 60.0  # for the Slack side of a burst to finish (answers are acked first)

pytestmark = pytest.mark.timeout(SIZE.timeout_seconds)

# Refusals a signature sent to another intent may get while its own intent is still being
# credited (storm A), and once it is (storm B).
RACING_REFUSALS = {
    (409, "signature_already_used"),  # it already credited its own intent
    (409, "intent_already_confirmed"),  # the target was already paid by its own signature
    (422, "unbound_payment"),  # not credited yet: the chain says it does not name the target
}


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
        # is kept off the intents (it would credit them before the verifies race).
        "PAYOPS_SCHEDULER_ENABLED": "true",
        "PAYOPS_RECONCILE_INTERVAL_SECONDS": "2",
        "PAYOPS_RECOVERY_MIN_AGE_SECONDS": "86400",
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


# --- building the plan ------------------------------------------------------------------------


async def build_plan(cluster: Cluster, rng: random.Random) -> Plan:
    """Users with their intents created on random replicas and paid on chain (the same plan
    for the same seed, whatever order the requests complete in)."""
    chain = cluster.services[0].chain
    users = [UserPlan(new_user("replica")) for _ in range(SIZE.users)]
    specs = [
        (user, credits, rng.randrange(REPLICAS))
        for user in users
        for credits in [5] + [rng.randint(8, 16) for _ in range(SIZE.intents_per_user)]
    ]  # each user's first intent is never paid
    gate = asyncio.Semaphore(16)

    async def create(user: UserPlan, credits: int, replica: int) -> dict[str, Any]:
        async with gate:
            return await cluster.create_intent(replica, user.user, credits)

    created = await asyncio.gather(*(create(*spec) for spec in specs))
    for (user, _, _), intent in zip(specs, created, strict=True):
        if user.unpaid:
            user.paid.append(intent)
        else:
            user.unpaid = intent

    async def pay(user: UserPlan, intent: dict[str, Any]) -> None:
        async with gate:
            user.signatures[str(intent["id"])] = await pay_finalized(chain, intent)

    await asyncio.gather(*(pay(user, intent) for user in users for intent in user.paid))
    for n, user in enumerate(users):
        user.plan_money(rng, large=n % 3 == 0)
    return Plan(users)


async def pay_finalized(chain: Chain, intent: dict[str, Any]) -> str:
    signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
    await chain.finalized(signature)
    return signature


def other(plan: Plan, user: UserPlan, rng: random.Random) -> UserPlan:
    return rng.choice([u for u in plan.users if u is not user])


# --- storm A: verifies, duplicates, replays, overdrafts, adjustment requests ------------------


async def storm_a(cluster: Cluster, plan: Plan, rng: random.Random) -> dict[str, Any]:
    """Every paid intent verified `duplicates` times at once on the replicas, with its
    signature sent at the same moment to other users' intents (one unpaid, one paid);
    overdrafts replayed on every replica; every adjustment requested through Slack."""
    own: dict[str, list[Answer]] = {}
    cross: list[Answer] = []
    overdrafts: list[Answer] = []
    commands: list[Answer] = []
    bursts: list[Burst] = []

    for n, (user, intent) in enumerate(plan.paid()):
        intent_id, sig = str(intent["id"]), user.signatures[str(intent["id"])]
        targets: list[tuple[str, str]] = []
        for k in range(SIZE.cross_replays):
            victim = other(plan, user, rng)
            target = victim.unpaid if k % 2 == 0 else rng.choice(victim.paid)
            targets.append((victim.user, str(target["id"])))

        async def verify_burst(
            n: int = n,
            uid: str = user.user,
            iid: str = intent_id,
            sig: str = sig,
            targets: list[tuple[str, str]] = targets,
        ) -> None:
            calls = [
                cluster.verify("verify (own signature)", n + d, uid, iid, sig)
                for d in range(SIZE.duplicates)
            ] + [
                cluster.verify("verify (signature of another intent)", n + k + 1, who, target, sig)
                for k, (who, target) in enumerate(targets)
            ]
            answers = await together(*calls)
            own[iid] = answers[: SIZE.duplicates]
            cross.extend(answers[SIZE.duplicates :])

        bursts.append(verify_burst)

    for user in plan.users:
        key, credits = next(iter(user.overdraft_keys.items()))

        async def overdraft_burst(
            uid: str = user.user, key: str = key, credits: int = credits
        ) -> None:
            overdrafts.extend(
                await together(
                    *(
                        cluster.debit("debit (overdraft)", r, uid, credits, key)
                        for r in range(REPLICAS)
                    )
                )
            )

        bursts.append(overdraft_burst)
        for adj in user.adjustments:

            async def request(adj: Adjust = adj, replica: int = rng.randrange(REPLICAS)) -> None:
                text = f'{adj.user} {adj.credits:+d} "replica test {adj.tag}"'
                commands.append(await cluster.command(replica, "/pay-adjust", text, adj.tag))

            bursts.append(request)

    wall = await run_bursts(bursts, in_flight=SIZE.bursts_in_flight, rng=rng)

    # Every verify of a paid intent with its own signature answers 200 CONFIRMED, the same
    # credit and signature; exactly one of them, on whichever replica, made the credit.
    for user, intent in plan.paid():
        answers = own[str(intent["id"])]
        assert [a.status for a in answers] == [200] * SIZE.duplicates, answers
        assert {a.body["tx_signature"] for a in answers} == {user.signatures[str(intent["id"])]}
        assert {a.body["credited"] for a in answers} == {intent["credits"]}
        first = [a for a in answers if a.body["already_credited"] is False]
        assert len(first) == 1, answers
    # The same signature sent to someone else's intent is refused, never credited.
    refusals = Counter((a.status, a.error_code) for a in cross)
    assert set(refusals) <= RACING_REFUSALS, refusals
    assert all(a.status == 422 and a.error_code == "insufficient_credits" for a in overdrafts), (
        overdrafts
    )
    assert all(a.status == 200 for a in commands), commands
    return {"wall_seconds": round(wall, 2), "cross_refusals": _codes(refusals)}


async def await_adjustments(cluster: Cluster, plan: Plan, pool: asyncpg.Pool) -> None:
    """Each request answered in Slack, stored PENDING_APPROVAL, posted for approval."""
    adjustments = plan.adjustments()
    await cluster.fake.wait_for(
        lambda: all(cluster.fake.of(f"response:{a.tag}") for a in adjustments),
        within=WAIT_SECONDS,
    )
    for adj in adjustments:
        [reply] = cluster.fake.of(f"response:{adj.tag}")
        assert "Posted for approval" in reply["text"], reply

    async def posted() -> bool:
        rows = await pool.fetch(
            "SELECT reason, id, status, slack_thread_ts FROM adjustments WHERE requester = $1",
            ONCALL,
        )
        return len(rows) == len(adjustments) and all(r["slack_thread_ts"] for r in rows)

    await wait_until(posted, "every adjustment request posted for approval", within=WAIT_SECONDS)
    rows = {
        r["reason"]: r
        for r in await pool.fetch("SELECT reason, id, status, slack_thread_ts FROM adjustments")
    }
    for adj in adjustments:
        row = rows[f"replica test {adj.tag}"]
        assert row["status"] == "PENDING_APPROVAL"
        adj.id, adj.thread_ts = int(row["id"]), str(row["slack_thread_ts"])


# --- storm B: approvals, debits, more duplicates and replays ----------------------------------


async def storm_b(cluster: Cluster, plan: Plan, rng: random.Random) -> dict[str, Any]:
    """Approvals clicked on every replica at once (and by a non-manager), debits replayed on
    every replica at once, two debits racing for the same credits, overdrafts, and every
    signature once more to its own intent and to two other intents."""
    clicks: dict[int, list[str]] = {}
    debits: dict[str, list[Answer]] = {}
    own: list[Answer] = []
    to_unpaid: list[Answer] = []
    to_paid: list[Answer] = []
    bursts: list[Burst] = []

    for adj in plan.adjustments():
        deciders = [m for m in adj.approvers for _ in range(REPLICAS)] + [ONCALL]
        ids = [cluster.click_id() for _ in deciders]
        clicks[adj.id] = ids

        async def click_burst(
            adj: Adjust = adj, deciders: list[str] = deciders, ids: list[str] = ids
        ) -> None:
            answers = await together(
                *(
                    cluster.click(n, adj, who, c)
                    for n, (who, c) in enumerate(zip(deciders, ids, strict=True))
                )
            )
            assert all(a.status == 200 for a in answers), answers  # acked; decided afterwards

        bursts.append(click_burst)

    for user in plan.users:
        for key, credits in user.safe_keys.items():
            bursts.append(
                _debit_burst(cluster, debits, "debit (replayed key)", user.user, {key: credits})
            )
        bursts.append(
            _debit_burst(cluster, debits, "debit (racing keys)", user.user, user.race_keys)
        )
        key, credits = list(user.overdraft_keys.items())[1]
        bursts.append(_debit_burst(cluster, debits, "debit (overdraft)", user.user, {key: credits}))

    for n, (user, intent) in enumerate(plan.paid()):
        sig = user.signatures[str(intent["id"])]
        victim = other(plan, user, rng)
        paid_target = rng.choice(victim.paid)

        async def verify_burst(
            n: int = n,
            uid: str = user.user,
            iid: str = str(intent["id"]),
            sig: str = sig,
            victim: UserPlan = victim,
            paid_target: dict[str, Any] = paid_target,
        ) -> None:
            a, b, c = await together(
                cluster.verify("verify (own signature)", n, uid, iid, sig),
                cluster.verify(
                    "verify (signature of another intent)",
                    n + 1,
                    victim.user,
                    str(victim.unpaid["id"]),
                    sig,
                ),
                cluster.verify(
                    "verify (signature of another intent)",
                    n + 2,
                    victim.user,
                    str(paid_target["id"]),
                    sig,
                ),
            )
            own.append(a)
            to_unpaid.append(b)
            to_paid.append(c)

        bursts.append(verify_burst)

    wall = await run_bursts(bursts, in_flight=SIZE.bursts_in_flight, rng=rng)

    # Approvals are acked at once and decided afterwards: wait until every click has its
    # outcome — a decision posted in the thread, or a private refusal.
    def decided() -> bool:
        return all(
            len(cluster.thread_posts(adj)) + len(cluster.refusals(clicks[adj.id]))
            >= len(clicks[adj.id])
            for adj in plan.adjustments()
        )

    try:
        await cluster.fake.wait_for(decided, within=WAIT_SECONDS)
    except TimeoutError:
        raise AssertionError(
            "clicks without an outcome: "
            + str(
                {
                    a.id: (len(cluster.thread_posts(a)), cluster.refusals(clicks[a.id]))
                    for a in plan.adjustments()
                }
            )
        ) from None

    refusals: Counter[str] = Counter()
    for adj in plan.adjustments():
        posts = cluster.thread_posts(adj)
        refused = cluster.refusals(clicks[adj.id])
        # One decision per approving manager; the last one applies the adjustment.
        assert len(posts) == len(adj.approvers), (adj, posts, refused)
        assert sum("→ apply" in p["text"] for p in posts) == 1, posts
        assert len(refused) == len(clicks[adj.id]) - len(adj.approvers), (adj, refused)
        assert sum("only a configured manager" in t for t in refused) == 1, refused
        for text in refused:
            assert any(
                why in text
                for why in ("already decided", "no longer pending", "only a configured manager")
            ), text
            refusals[_refusal_kind(text)] += 1

    for user in plan.users:
        for key in user.safe_keys:
            _assert_applied_once(debits[key])
        race = [debits[k] for k in user.race_keys]
        applied = [answers for answers in race if answers[0].status == 201]
        assert len(applied) == 1, race  # exactly one of the two racing debits fits
        _assert_applied_once(applied[0])
        [refused_race] = [answers for answers in race if answers[0].status != 201]
        assert all(
            a.status == 422 and a.error_code == "insufficient_credits" for a in refused_race
        ), refused_race
        over = debits[list(user.overdraft_keys)[1]]
        assert all(a.status == 422 and a.error_code == "insufficient_credits" for a in over), over

    assert all(a.status == 200 and a.body["already_credited"] is True for a in own), own
    assert all((a.status, a.error_code) == (409, "signature_already_used") for a in to_unpaid), (
        to_unpaid
    )
    assert all((a.status, a.error_code) == (409, "intent_already_confirmed") for a in to_paid), (
        to_paid
    )
    return {"wall_seconds": round(wall, 2), "click_refusals": dict(refusals)}


def _debit_burst(
    cluster: Cluster, into: dict[str, list[Answer]], kind: str, user: str, keys: dict[str, int]
) -> Burst:
    """Each key's debit sent to every replica at once (all the keys at the same moment)."""

    async def burst() -> None:
        calls = [
            cluster.debit(kind, r + n, user, credits, key)
            for n, (key, credits) in enumerate(keys.items())
            for r in range(REPLICAS)
        ]
        answers = await together(*calls)
        for n, key in enumerate(keys):
            into[key] = answers[n * REPLICAS : (n + 1) * REPLICAS]

    return burst


def _assert_applied_once(answers: list[Answer]) -> None:
    """The same debit on every replica: all 201 with one transaction, one not a replay."""
    assert [a.status for a in answers] == [201] * len(answers), answers
    assert len({a.body["transaction_id"] for a in answers}) == 1, answers
    assert sum(a.headers.get("Idempotent-Replayed") != "true" for a in answers) == 1, answers
    assert all(a.body["balance"] >= 0 for a in answers), answers


def _refusal_kind(text: str) -> str:
    for why in ("already decided", "no longer pending", "only a configured manager"):
        if why in text:
            return why
    return text


def _codes(counts: Counter[tuple[int, str | None]]) -> dict[str, int]:
    return {f"{status} {code}": n for (status, code), n in sorted(counts.items())}


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
    health = await ledger_db.health(pool)
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
        r["idempotency_key"]
        for r in await pool.fetch(
            "SELECT idempotency_key FROM ledger_transactions WHERE kind = 'debit'"
        )
    )
    for user in plan.users:
        for key in user.safe_keys:
            assert keys[f"{DEBIT_SERVICE}:{key}"] == 1
        assert sorted(keys[f"{DEBIT_SERVICE}:{k}"] for k in user.race_keys) == [0, 1]
        assert all(keys[f"{DEBIT_SERVICE}:{k}"] == 0 for k in user.overdraft_keys)
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
               WHERE t.idempotency_key = $1""",
            f"adjustment:{adj.id}",
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
    """Run the `payops` CLI against the replicas' database and chain; its stdout."""
    chain = cluster.services[0].chain
    env = service_env(chain.info, database_url, workdir, **slack_settings(cluster.fake))
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
        still_open, _, _ = await recon_store.findings_of(conn, row["id"])
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
        assert await ledger_db.balance(pool, user.user) == user.purchased
    b = await storm_b(cluster, plan, rng)

    reads = await asyncio.gather(
        *(cluster.balance(rng.randrange(REPLICAS), u.user) for u in plan.users)
    )
    assert reads == [u.expected_balance for u in plan.users]
    money = await assert_database(pool, plan)

    recon_text, audit_text = await asyncio.gather(
        payops(cluster, database_url, tmp_path / "cli-recon", "ops", "--as", ONCALL, "recon"),
        payops(cluster, database_url, tmp_path / "cli-audit", "audit", "verify"),
    )
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
    assert report["rows"] == report["sealed"] > 0, audit_text
    async with pool.acquire() as conn:
        chain_report = await audit.verify_chain(conn)
    assert chain_report.ok, chain_report
    # The replicas' scheduled jobs ran (one replica per tick) and none failed.
    assert all(r["outcome"] != "failed" for r in jobs), [dict(r) for r in jobs]
