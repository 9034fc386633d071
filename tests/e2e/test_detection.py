"""Payments detected by payops itself, through the real processes: nobody calls verify.

One local chain; a `payops serve` whose RPC goes through the fault proxy
(`faulty_rpc.FaultyRpc`) and whose webhooks go to a receiver in the test
(`detect_rig.WebhookReceiver`). The treasury watcher polls at its default interval (1 s).
What the tests show:

- a payment made with the intent's reference and never verified is CONFIRMED, credited
  once, seen by a client polling the intent (every 50 ms), and delivered as a correctly
  signed `intent.confirmed` webhook, both within 3 s of landing;
- two replicas on one database: one watcher at a time (the "leading on" log lines and the
  advisory lock in pg_locks); SIGKILL of the leader while payments land: the other takes
  over, every payment credited exactly once, none missed;
- the RPC node unreachable (the proxy answers 503) while payments land: all credited once
  it answers again;
- the webhook receiver down (503) for a while: afterwards every event is delivered, each
  user's events in order, every signature valid; a replay (`webhooks.replay`) delivers the
  same event ids again;
- dust (1 base unit) carrying a victim's reference before and after the real payment: the
  victim is still credited.

`PAYOPS_TEST_HEAVY=1` runs the long outages (RPC down 30 s during 200 payments, receiver
down 5 minutes). `pytest -s` prints the measured times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import pytest

from api.auth import DEBIT_SCOPE, mint_token
from core import webhooks
from tests.e2e.detect_rig import (
    Payment,
    Received,
    WebhookReceiver,
    credited_intents,
    detect_settings,
    leaders,
    lock_holders,
    pay,
    running_receiver,
    wait_all_credited,
    wait_status,
)
from tests.e2e.facts import (
    assert_credited_once,
    assert_ledger_healthy,
    new_user,
    session_database,
)
from tests.e2e.faulty_rpc import TRANSPORT_KINDS, FaultyRpc, Kind, running_faulty_rpc
from tests.e2e.harness import (
    JWT_SECRET,
    Chain,
    Service,
    enter_concurrently,
    killable_service,
    running_chain,
    running_service,
)
from tests.e2e.procs import wait_until

if TYPE_CHECKING:
    from tests.conftest import DatabaseFactory

HEAVY: Final = os.environ.get("PAYOPS_TEST_HEAVY") == "1"
LANDING_TO_SEEN: Final = 3.0  # seconds, finality on the local chain included
RPC_DOWN_SECONDS: Final = 30.0 if HEAVY else 10.0
RPC_DOWN_PAYMENTS: Final = 200 if HEAVY else 30
HOOK_DOWN_SECONDS: Final = 300.0 if HEAVY else 15.0
DEBIT_SERVICE: Final = "svc-detect"

pytestmark = pytest.mark.timeout(900 if HEAVY else 120)


@dataclass
class Rig:
    chain: Chain
    proxy: FaultyRpc
    receiver: WebhookReceiver
    service: Service
    session: aiohttp.ClientSession


@pytest.fixture(scope="module")
async def rig(
    http: aiohttp.ClientSession,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Rig]:
    """A chain, the proxy in front of it, a receiver, and a service using both."""
    workdir = tmp_path_factory.mktemp("detect")
    async with (
        session_database(database_factory) as dsn,
        running_chain(workdir / "chain", http) as chain,
        running_faulty_rpc(chain.info.rpc_url) as proxy,
        running_receiver() as receiver,
        running_service(
            chain, dsn, workdir / "service", http, **detect_settings(proxy.url, receiver)
        ) as service,
    ):
        yield Rig(chain, proxy, receiver, service, http)


async def create_intents(
    service: Service, user: str, n: int, credits: int = 5
) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(service.create_intent(user, credits) for _ in range(n))))


# --- one payment, end to end -----------------------------------------------------------------


async def test_an_unverified_payment_is_confirmed_seen_and_announced_within_3_s(
    rig: Rig,
) -> None:
    service, receiver = rig.service, rig.receiver
    user = new_user("detect")
    intent = await service.create_intent(user, credits=7)
    client = asyncio.create_task(wait_status(service, user, intent["id"], within=30))

    payment = await pay(rig.chain, intent)
    shown, seen_at = await client
    await wait_until(
        lambda: _true(bool(receiver.accepted_for(intent["id"]))),
        "the intent.confirmed webhook arrived",
        within=30,
    )
    hook = receiver.accepted_for(intent["id"])[0]

    assert shown["status"] == "CONFIRMED"
    assert shown["tx_signature"] == payment.signature
    found = await assert_credited_once(service, intent, payment.signature)
    assert found.attempts == [("confirmed", None)]
    source = await service.pool.fetchval(
        "SELECT source FROM verification_attempts WHERE intent_id = $1", uuid.UUID(intent["id"])
    )
    assert source == "watcher"
    assert (hook.type, hook.data["status"], hook.data["tx_signature"]) == (
        "intent.confirmed",
        "CONFIRMED",
        payment.signature,
    )
    assert hook.signature_ok
    seen, told = seen_at - payment.landed, hook.at - payment.landed
    print(f"\nlanding -> client sees CONFIRMED {seen:.2f} s, -> webhook {told:.2f} s")
    assert seen <= LANDING_TO_SEEN, seen
    assert told <= LANDING_TO_SEEN, told


async def _true(value: bool) -> bool:
    return value


# --- dust carrying the victim's reference ------------------------------------------------------


async def test_dust_with_the_victims_reference_does_not_stop_the_credit(rig: Rig) -> None:
    """30 transfers of 1 base unit with the victim's reference before the real payment and
    30 after: the real payment credits the victim (underpaid dust must not close the
    intent)."""
    service, chain = rig.service, rig.chain
    user = new_user("victim")
    intent = await service.create_intent(user, credits=3)
    before = [await pay(chain, intent, amount=1, memo=f"dust {i}") for i in range(30)]
    real = await pay(chain, intent)
    after = [await pay(chain, intent, amount=1, memo=f"dust {i}") for i in range(30, 60)]
    dust = {p.signature for p in before + after}

    # Every one of the 61 transfers is recorded as a flow bound to the victim's intent.
    async def all_recorded() -> bool:
        n = await service.pool.fetchval(
            "SELECT count(*) FROM treasury_flows WHERE intent_id = $1", uuid.UUID(intent["id"])
        )
        return bool(n == len(dust) + 1)

    await wait_until(all_recorded, "all 61 transfers recorded", within=30)
    shown, _ = await wait_status(service, user, intent["id"], within=10)
    assert (shown["status"], shown.get("reject_code")) == ("CONFIRMED", None), shown
    await assert_credited_once(service, intent, real.signature)


# --- the RPC node unreachable ------------------------------------------------------------------


async def test_payments_made_while_the_rpc_is_down_are_credited_when_it_returns(
    rig: Rig,
) -> None:
    service, proxy, chain = rig.service, rig.proxy, rig.chain
    user = new_user("rpc-down")
    intents = await create_intents(service, user, RPC_DOWN_PAYMENTS, credits=1)
    ids = [i["id"] for i in intents]
    proxy.rate_kinds = (Kind.HTTP_503,)
    proxy.inject(rate=1.0)
    down_at = time.monotonic()
    try:
        spacing = RPC_DOWN_SECONDS * 0.8 / len(intents)
        payments: list[Payment] = []
        for intent in intents:
            payments.append(await pay(chain, intent))
            await asyncio.sleep(spacing)
        await asyncio.sleep(max(0.0, down_at + RPC_DOWN_SECONDS - time.monotonic()))
        # Nothing can have been credited: every RPC answer was a 503.
        assert await credited_intents(service, ids) == {}
        assert proxy.injected["http_503"] > 0
    finally:
        proxy.heal()
        proxy.rate_kinds = TRANSPORT_KINDS
    took = await wait_all_credited(service, ids, within=30 + RPC_DOWN_PAYMENTS / 10)
    print(
        f"\nRPC down {time.monotonic() - down_at - took:.1f} s, {len(payments)} payments, "
        f"all credited {took:.2f} s after it returned"
    )
    assert await credited_intents(service, ids) == dict.fromkeys(ids, 1)
    for payment in payments:
        await _credited_by(service, payment)
    await assert_ledger_healthy(service.pool)


async def _credited_by(service: Service, payment: Payment) -> None:
    row = await service.pool.fetchrow(
        "SELECT status, tx_signature FROM purchase_intents WHERE id = $1",
        uuid.UUID(payment.intent["id"]),
    )
    assert row is not None
    assert (row["status"], row["tx_signature"]) == ("CONFIRMED", payment.signature)


# --- the webhook receiver down -------------------------------------------------------------------


async def test_webhooks_wait_for_a_receiver_that_was_down_then_replay_the_same_ids(
    rig: Rig,
) -> None:
    service, receiver, chain = rig.service, rig.receiver, rig.chain

    async def nothing_pending() -> bool:
        pending = await service.pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
        )
        return bool(pending == 0)

    # The earlier tests' events first: with the receiver down and the rig's backoff capped at
    # the round interval (1 s), the oldest 100 pending deliveries are due every round, and a
    # backlog of them (the 200 payments of the RPC outage) would keep this test's newer
    # events from being tried at all.
    await wait_until(nothing_pending, "the earlier tests' webhooks delivered", within=60)
    since = await service.pool.fetchval("SELECT now()")
    users = [new_user("hooks") for _ in range(5)]
    receiver.down = True
    down_at = time.monotonic()
    try:
        intents = {u: await service.create_intent(u, credits=5) for u in users}
        await asyncio.gather(*(pay(chain, i) for i in intents.values()))
        await wait_all_credited(service, [i["id"] for i in intents.values()], within=30)
        # Three debits per user while the receiver is down: their events must arrive in order.
        for n in range(3):
            for u in users:
                answer = await _debit(rig, u, 1, f"{u}-{n}")
                assert answer == 201, answer
        await asyncio.sleep(max(0.0, down_at + HOOK_DOWN_SECONDS - time.monotonic()))
        refused = [r for r in receiver.received if not r.accepted and r.subject_key in users]
        assert refused, "no delivery was attempted while the receiver was down"
    finally:
        receiver.down = False

    ours = set(users) | {i["id"] for i in intents.values()}
    expected = await service.pool.fetch(
        "SELECT id, type, seq FROM webhook_events WHERE subject = ANY($1::text[]) ORDER BY seq",
        [f"user:{u}" for u in users] + [f"intent:{i['id']}" for i in intents.values()],
    )
    assert len(expected) == len(users) * 4  # a confirmation and three debits each
    expected_ids = [str(r["id"]) for r in expected]

    async def all_delivered() -> bool:
        got = {r.event_id for r in receiver.accepted() if r.subject_key in ours}
        return got >= set(expected_ids)

    await wait_until(all_delivered, "every event delivered after the receiver came back", within=30)
    first = _first_accepted(receiver, ours)
    assert all(r.signature_ok for r in receiver.received if r.subject_key in ours)
    for u in users:
        debits = [r for r in first if r.type == "credits.debited" and r.subject_key == u]
        assert [r.data["balance"] for r in debits] == [4, 3, 2], debits

    async def all_marked_delivered() -> bool:
        # The receiver has them; the delivering replica records each once its answer is in.
        pending = await service.pool.fetchval(
            """SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'
               AND event_id = ANY($1::uuid[])""",
            [uuid.UUID(i) for i in expected_ids],
        )
        return bool(pending == 0)

    await wait_until(all_marked_delivered, "every delivery recorded as delivered", within=10)

    # A replay delivers the same events again, with the same ids.
    accepted_before = len(receiver.accepted())
    async with service.pool.acquire() as conn:
        assert await webhooks.replay(conn, since) >= len(expected_ids)

    async def replayed() -> bool:
        again = Counter(r.event_id for r in receiver.accepted()[accepted_before:])
        return all(again[i] >= 1 for i in expected_ids)

    await wait_until(replayed, "every event delivered again by the replay", within=30)
    again = {r.event_id for r in receiver.accepted()[accepted_before:] if r.subject_key in ours}
    assert again == set(expected_ids)
    assert all(r.signature_ok for r in receiver.accepted()[accepted_before:])
    print(f"\nreceiver down {HOOK_DOWN_SECONDS:.0f} s: {len(expected_ids)} events delivered")


def _first_accepted(receiver: WebhookReceiver, keys: set[str]) -> list[Received]:
    seen: set[str] = set()
    first = []
    for r in receiver.accepted():
        if r.subject_key in keys and r.event_id not in seen:
            seen.add(r.event_id)
            first.append(r)
    return first


async def _debit(rig: Rig, user: str, credits: int, key: str) -> int:
    token = mint_token(JWT_SECRET, DEBIT_SERVICE, scopes=(DEBIT_SCOPE,))
    async with rig.session.post(
        rig.service.url + "/v1/credits/debits",
        json={"user_id": user, "credits": credits, "reason": f"detection test {key}"},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
    ) as resp:
        return resp.status


# --- two replicas, the leader killed -------------------------------------------------------------


async def test_one_watcher_at_a_time_and_the_other_takes_over_when_the_leader_dies(
    rig: Rig, database_url: str, tmp_path: Path
) -> None:
    chain, http = rig.chain, rig.session
    async with contextlib.AsyncExitStack() as stack:
        a, b = await enter_concurrently(
            stack,
            [
                killable_service(
                    chain,
                    database_url,
                    tmp_path / f"replica-{n}",
                    http,
                    PAYOPS_SCHEDULER_ENABLED="true",
                    PAYOPS_RECOVERY_MIN_AGE_SECONDS="86400",
                )
                for n in range(2)
            ],
        )
        by_pid = {a.proc.pid: a, b.proc.pid: b}

        async def one_leader() -> bool:
            return len(_leading(a) + _leading(b)) == 1

        await wait_until(one_leader, "one replica leads the watcher", within=10)
        leader = a if _leading(a) else b
        other = b if leader is a else a
        assert _leading(leader) == [leader.proc.pid]
        assert _leading(other) == []
        assert len(await lock_holders(other, "watcher")) == 1

        user = new_user("takeover")
        intents = await create_intents(other, user, 20, credits=1)
        ids = [i["id"] for i in intents]
        first = [await pay(chain, i) for i in intents[:8]]
        await wait_all_credited(other, ids[:8], within=15)
        # Still one leader, and the same one, while the first payments were credited.
        assert _leading(other) == []
        assert len(await lock_holders(other, "watcher")) == 1

        # Kill the leader while the rest land: after the third of them.
        rest: list[Payment] = []
        killed_at = time.monotonic()
        for n, intent in enumerate(intents[8:]):
            rest.append(await pay(chain, intent))
            if n == 2:
                leader.proc.send(signal.SIGKILL)
                killed_at = time.monotonic()
            await asyncio.sleep(0.1)
        await leader.proc.wait_exit(10)
        took = await wait_all_credited(other, ids, within=30)
        print(
            f"\nleader {leader.proc.pid} killed; {other.proc.pid} took over; all credited "
            f"{time.monotonic() - killed_at:.2f} s after the kill ({took:.2f} s after the last)"
        )
        assert _leading(other) == [other.proc.pid]
        assert len(await lock_holders(other, "watcher")) == 1
        assert await credited_intents(other, ids) == dict.fromkeys(ids, 1)
        for payment in first + rest:
            await assert_credited_once_by_signature(other, payment)
        await assert_ledger_healthy(other.pool)
        assert set(by_pid) == {a.proc.pid, b.proc.pid}


def _leading(service: Service) -> list[int]:
    return [int(r.rpartition(":")[2]) for r in leaders(service.proc, "watcher")]


async def assert_credited_once_by_signature(service: Service, payment: Payment) -> None:
    await _credited_by(service, payment)
    flows = await service.pool.fetch(
        "SELECT intent_id, settled_at FROM treasury_flows WHERE signature = $1",
        payment.signature,
    )
    assert len(flows) == 1
    assert str(flows[0]["intent_id"]) == payment.intent["id"]
    assert flows[0]["settled_at"] is not None
    credits = await service.pool.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE purchase_signature = $1",
        payment.signature,
    )
    assert credits == 1


async def test_a_debit_event_is_stored_as_a_json_object(rig: Rig) -> None:
    """The outbox's `data` is a JSON object for every event, so it can be queried in SQL
    (`data->>'user_id'`) like the events the triggers write."""
    service = rig.service
    user = new_user("debit-event")
    intent = await service.create_intent(user, credits=2)
    await pay(rig.chain, intent)
    await wait_all_credited(service, [intent["id"]], within=15)
    assert await _debit(rig, user, 1, f"{user}-json") == 201
    kinds = await service.pool.fetch(
        """SELECT type, jsonb_typeof(data) AS shape FROM webhook_events
           WHERE subject = ANY($1::text[]) ORDER BY seq""",
        [f"intent:{intent['id']}", f"user:{user}"],
    )
    assert [(r["type"], r["shape"]) for r in kinds] == [
        ("intent.confirmed", "object"),
        ("credits.debited", "object"),
    ]
