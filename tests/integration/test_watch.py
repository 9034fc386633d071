"""The treasury watcher against a real local chain and PostgreSQL: payments nobody verified are
found from the treasury's own history and credited once; every change to the treasury is
recorded once; the cursor never passes what was not recorded."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from core import ledger, purchases, watch
from core.audit import Actor
from core.chain.rpc import RpcUnavailable, SolanaRpc
from core.gate import SwitchName, set_switch
from tests.chain_rig import Rig

pytestmark = pytest.mark.timeout(60)


async def _intent_facts(pool: asyncpg.Pool, intent_id: Any) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT i.status, i.tx_signature,
                  (SELECT count(*) FROM ledger_transactions t WHERE t.intent_id = i.id) AS credits,
                  (SELECT array_agg(source || ':' || outcome ORDER BY id)
                     FROM verification_attempts a WHERE a.intent_id = i.id) AS attempts
           FROM purchase_intents i WHERE i.id = $1""",
        intent_id,
    )
    assert row is not None
    return dict(row.items())


def _as_paid(intent: purchases.Intent) -> dict[str, str]:
    """The intent as the wallet pays it (the API's fields)."""
    return {
        "token_program": intent.token_program,
        "mint": intent.mint,
        "recipient": intent.recipient,
        "amount": str(intent.amount),
        "reference": intent.reference,
    }


async def _flows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT signature, amount, intent_id, settled_at IS NOT NULL AS settled, refs"
        " FROM treasury_flows ORDER BY slot, signature"
    )
    return [dict(r.items()) for r in rows]


async def test_a_payment_nobody_verified_is_credited_once(rig: Rig) -> None:
    first = await watch.poll(rig.services, rig.rpc)  # begins watching: the start balance
    assert first.started
    assert first.recorded == 0
    intent = await rig.intent("nadia", credits=4)
    signature = await rig.pay(intent)  # the phone wallet pays; nobody calls verify

    report = await watch.poll(rig.services, rig.rpc)

    assert (report.recorded, report.credited) == (1, 1)
    facts = await _intent_facts(rig.pool, intent.id)
    assert facts == {
        "status": "CONFIRMED",
        "tx_signature": signature,
        "credits": 1,
        "attempts": ["watcher:confirmed"],
    }
    assert await ledger.balance(rig.pool, "nadia") == 4
    flows = await _flows(rig.pool)
    assert flows == [
        {
            "signature": signature,
            "amount": intent.amount,
            "intent_id": intent.id,
            "settled": True,
            "refs": [intent.reference],
        }
    ]
    again = await watch.poll(rig.services, rig.rpc)
    assert (again.read, again.recorded, again.credited) == (0, 0, 0)
    assert await ledger.balance(rig.pool, "nadia") == 4


async def test_every_change_to_the_treasury_is_recorded_and_ties_to_its_balance(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    bound = await rig.intent("omar", credits=2)
    await rig.pay(bound)
    stray = await rig.intent("omar", credits=1)  # pays without its reference: not bound
    unbound_sig = await rig.wallet.pay(
        {
            "token_program": stray.token_program,
            "mint": stray.mint,
            "recipient": stray.recipient,
            "amount": "777",
            "reference": stray.reference,
        },
        decimals=rig.info.decimals,
        with_reference=False,
    )
    await rig.wallet.wait_finalized(unbound_sig)

    report = await watch.poll(rig.services, rig.rpc)

    assert report.recorded == 2
    flows = {f["signature"]: f for f in await _flows(rig.pool)}
    assert flows[unbound_sig]["intent_id"] is None
    assert flows[unbound_sig]["amount"] == 777
    cursor = await watch.cursor(rig.pool, rig.info.treasury_token_account)
    assert cursor is not None
    on_chain, _ = await rig.rpc.get_token_account_balance(rig.info.treasury_token_account)
    recorded = await watch.recorded_total(rig.pool, rig.info.treasury_token_account)
    assert cursor.start_balance + recorded == on_chain
    assert (await _intent_facts(rig.pool, stray.id))["status"] == "PENDING"


async def test_a_memo_carrying_the_intent_id_binds_the_payment(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("pia", credits=3)
    signature = await rig.wallet.pay(
        _as_paid(intent),
        decimals=rig.info.decimals,
        with_reference=False,
        memo=str(intent.id),
    )
    await rig.wallet.wait_finalized(signature)

    report = await watch.poll(rig.services, rig.rpc)

    assert report.credited == 1
    assert (await _intent_facts(rig.pool, intent.id))["status"] == "CONFIRMED"


class _FetchFails:
    """The node lists signatures but cannot serve the transactions (an outage mid-poll)."""

    def __init__(self, rpc: SolanaRpc) -> None:
        self._rpc = rpc

    async def get_signatures_for_address(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return await self._rpc.get_signatures_for_address(*args, **kwargs)

    async def get_token_account_balance(self, address: str) -> tuple[int, int]:
        return await self._rpc.get_token_account_balance(address)

    async def get_transaction(self, signature: str) -> dict[str, Any] | None:
        raise RpcUnavailable("getTransaction", "connection refused")


async def test_an_outage_mid_poll_moves_the_cursor_past_nothing(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    before = await watch.cursor(rig.pool, rig.info.treasury_token_account)
    intent = await rig.intent("quinn", credits=2)
    await rig.pay(intent)

    broken = await watch.poll(rig.services, _FetchFails(rig.rpc))

    assert broken.stopped is not None
    assert "rpc unavailable" in broken.stopped
    assert await watch.cursor(rig.pool, rig.info.treasury_token_account) == before
    assert await _flows(rig.pool) == []
    healed = await watch.poll(rig.services, rig.rpc)
    assert (healed.recorded, healed.credited) == (1, 1)
    assert (await _intent_facts(rig.pool, intent.id))["credits"] == 1


async def test_pages_back_to_the_cursor_whatever_the_page_size(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intents = [await rig.intent("rosa", credits=1) for _ in range(5)]
    for intent in intents:
        await rig.pay(intent)

    report = await watch.poll(rig.services, rig.rpc, page=2)

    assert (report.read, report.recorded, report.credited) == (5, 5, 5)
    assert await ledger.balance(rig.pool, "rosa") == 5


async def test_a_closed_gate_holds_detected_payments_until_it_reopens(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("sven", credits=2)
    await rig.pay(intent)
    async with rig.pool.acquire() as conn:
        await set_switch(
            conn, SwitchName.VERIFY, is_open=False, reason="incident", actor=Actor("op", "cli")
        )

    held = await watch.poll(rig.services, rig.rpc)

    assert held.recorded == 1
    assert held.credited == 0
    assert [f["settled"] for f in await _flows(rig.pool)] == [False]
    assert (await _intent_facts(rig.pool, intent.id))["status"] == "PENDING"
    async with rig.pool.acquire() as conn:
        await set_switch(
            conn, SwitchName.VERIFY, is_open=True, reason="fixed", actor=Actor("op", "cli")
        )
    released = await watch.poll(rig.services, rig.rpc)
    assert released.credited == 1
    assert (await _intent_facts(rig.pool, intent.id))["credits"] == 1


async def test_a_recorded_flow_cannot_be_changed_or_deleted(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    await rig.pay(await rig.intent("tara"))
    await watch.poll(rig.services, rig.rpc)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await rig.pool.execute("DELETE FROM treasury_flows")
    with pytest.raises(asyncpg.RaiseError, match="cannot change"):
        await rig.pool.execute("UPDATE treasury_flows SET amount = amount + 1")


async def test_two_payments_that_add_up_to_the_price_credit_the_intent_once(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("ulla", credits=5)
    first = intent.amount * 60 // 100
    await rig.pay(intent, amount=first)
    short = await watch.poll(rig.services, rig.rpc)
    assert short.credited == 0
    assert (await _intent_facts(rig.pool, intent.id))["status"] == "PENDING"

    completing = await rig.pay(intent, amount=intent.amount - first)
    topped = await watch.poll(rig.services, rig.rpc)

    assert topped.credited == 1
    facts = await _intent_facts(rig.pool, intent.id)
    assert facts["status"] == "CONFIRMED"
    assert facts["tx_signature"] == completing
    assert facts["credits"] == 1
    assert await ledger.balance(rig.pool, "ulla") == 5
    assert await _received_and_outcomes(rig.pool, intent.id) == (
        intent.amount,
        ["partial", "credited"],
    )


async def test_parts_that_add_up_within_one_poll_credit_the_intent_once(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("una", credits=5)
    first = intent.amount * 30 // 100
    second = intent.amount * 25 // 100  # not the first's: that would be the same transaction
    await rig.pay(intent, amount=first)
    await rig.pay(intent, amount=second)
    completing = await rig.pay(intent, amount=intent.amount - first - second)
    report = await watch.poll(rig.services, rig.rpc)  # all three read and settled at once

    assert report.credited == 1
    facts = await _intent_facts(rig.pool, intent.id)
    assert (facts["status"], facts["tx_signature"]) == ("CONFIRMED", completing)
    assert await ledger.balance(rig.pool, "una") == 5
    assert await _received_and_outcomes(rig.pool, intent.id) == (
        intent.amount,
        ["partial", "partial", "credited"],
    )


async def _received_and_outcomes(pool: asyncpg.Pool, intent_id: Any) -> tuple[int, list[str]]:
    """What the intent records as received, and its flows' outcomes in slot order."""
    received = await pool.fetchval(
        "SELECT received_amount FROM purchase_intents WHERE id = $1", intent_id
    )
    outcomes = await pool.fetch(
        "SELECT outcome FROM treasury_flows WHERE intent_id = $1 ORDER BY slot", intent_id
    )
    return int(received), [r["outcome"] for r in outcomes]


async def _dust(rig: Rig, intent: Any, n: int) -> None:
    """One base unit to the treasury carrying `intent`'s reference (and a memo that makes
    each transfer a transaction of its own)."""
    signature = await rig.wallet.pay(
        {**_as_paid(intent), "amount": "1"},
        decimals=rig.info.decimals,
        memo=f"dust {n}",
    )
    await rig.wallet.wait_finalized(signature)


async def test_dust_carrying_a_victims_reference_cannot_get_the_intent_rejected(
    rig: Rig,
) -> None:
    await watch.poll(rig.services, rig.rpc)
    victim = await rig.intent("vera", credits=2)
    for n in range(30):
        await _dust(rig, victim, n)  # a stranger's dust, with the victim's public reference
    await watch.poll(rig.services, rig.rpc)
    assert (await _intent_facts(rig.pool, victim.id))["status"] == "PENDING"

    real = await rig.pay(victim)
    for n in range(30, 60):
        await _dust(rig, victim, n)
    await watch.poll(rig.services, rig.rpc)

    facts = await _intent_facts(rig.pool, victim.id)
    assert facts["status"] == "CONFIRMED"
    assert facts["credits"] == 1
    assert await ledger.balance(rig.pool, "vera") == 2
    # The victim's own verify of their payment is an answer, not a refusal.
    result = await purchases.verify_intent(rig.services, Actor("vera", "api"), victim.id, real)
    assert isinstance(result, purchases.Credited)
    assert result.duplicate
    assert result.balance == 2


async def test_readiness_says_when_the_watcher_is_behind(rig: Rig) -> None:
    from tests.support import api_client

    async with api_client(rig.services) as client:
        before = await (await client.get("/readyz")).json()
        await watch.poll(rig.services, rig.rpc)
        fresh = await client.get("/readyz")
        fresh_body = await fresh.json()
        await rig.pool.execute("UPDATE treasury_cursor SET updated_at = now() - interval '1 hour'")
        stale = await client.get("/readyz")
        stale_body = await stale.json()

    assert before["checks"]["treasury_watcher"] == "not started"
    assert fresh_body["checks"]["treasury_watcher"] == "ok"
    assert stale_body["checks"]["treasury_watcher"].startswith("behind: last complete read 36")
    # Informational only: the replica stays in service.
    assert (fresh.status, stale.status) == (200, 200)


async def test_a_payment_seen_before_it_is_final_is_told_then_credited_once_final(
    rig: Rig,
) -> None:
    import json

    from tests.integration.test_intent_events import events
    from tests.support import api_client

    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("wanda", credits=2)
    await rig.wallet.call("localnet_holdFinality", [])
    try:
        signature = await rig.wallet.pay(
            _as_paid(intent),
            decimals=rig.info.decimals,
        )
        async with (
            api_client(rig.services) as client,
            events(client, intent.id, "wanda") as (
                _,
                sse,
            ),
        ):
            assert (await sse.status())["status"] == "PENDING"
            early = await watch.poll(rig.services, rig.rpc)
            # Seen at confirmed: told, not credited (a confirmed block can still roll back).
            assert (early.seen, early.recorded, early.credited) == (1, 0, 0)
            got = await sse.next()
            while got is not None and got[0] == ":":
                got = await sse.next()
            assert got is not None
            assert got[0] == "seen"
            seen = json.loads(got[1])
            assert (seen["signature"], seen["commitment"]) == (signature, "confirmed")
            assert seen["amount"] == str(intent.amount)
            again = await watch.poll(rig.services, rig.rpc)
            assert again.seen == 0  # told once
            await rig.wallet.call("localnet_releaseFinality", [])
            await rig.wallet.wait_finalized(signature)
            final = await watch.poll(rig.services, rig.rpc)
            assert final.credited == 1
            confirmed = await sse.status()
            assert (confirmed["status"], confirmed["tx_signature"]) == ("CONFIRMED", signature)
    finally:
        await rig.wallet.call("localnet_releaseFinality", [])
    assert await ledger.balance(rig.pool, "wanda") == 2


async def test_a_payment_that_binds_no_intent_is_read_once_while_it_is_not_final(
    rig: Rig,
) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("yuri", credits=1)
    looked: set[str] = set()
    await rig.wallet.call("localnet_holdFinality", [])
    try:
        signature = await rig.wallet.pay(
            _as_paid(intent),
            decimals=rig.info.decimals,
            with_reference=False,  # nobody's reference: the watcher cannot bind it
        )
        before = rig.rpc.stats.requests["getTransaction"]
        for _ in range(3):
            report = await watch.poll(rig.services, rig.rpc, looked=looked)
            assert (report.seen, report.recorded) == (0, 0)
        assert rig.rpc.stats.requests["getTransaction"] - before == 1
        assert looked == {signature}
        await rig.wallet.call("localnet_releaseFinality", [])
        await rig.wallet.wait_finalized(signature)
        final = await watch.poll(rig.services, rig.rpc, looked=looked)
        assert (final.recorded, final.credited) == (1, 0)
        assert looked == set()  # final now: out of the window, forgotten
    finally:
        await rig.wallet.call("localnet_releaseFinality", [])
