"""The two storms of `test_replicas.py`: the plan of users, intents, payments, debits and
adjustments it sends, and the bursts that send it to three replicas at once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import asyncpg

from tests.e2e.facts import new_user
from tests.e2e.harness import Answer, Chain
from tests.e2e.procs import wait_until
from tests.e2e.replicas import (
    ONCALL,
    Adjust,
    Burst,
    Cluster,
    Plan,
    UserPlan,
    replica_size,
    run_bursts,
    together,
)

SIZE = replica_size()
REPLICAS = 3
WAIT_SECONDS = 60.0  # for the Slack side of a burst to finish (answers are acked first)

# Refusals a signature sent to another intent may get while its own intent is still being
# credited (storm A), and once it is (storm B).
RACING_REFUSALS = {
    (409, "signature_already_used"),  # it already credited its own intent
    (409, "intent_already_confirmed"),  # the target was already paid by its own signature
    (422, "unbound_payment"),  # not credited yet: the chain says it does not name the target
}


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
