"""The books tied to the chain, on the real local chain and PostgreSQL: while the treasury
watcher runs, reconciliation reads its recorded flows and compares the treasury's balance on
chain with start balance + flows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from core import incidents, watch
from core.audit import Actor
from core.incidents import Closeout
from core.recon import ReconRun, RpcChainLookup, run_reconciliation
from localnet.wallet import Wallet
from tests.chain_rig import GRACE, Rig

pytestmark = pytest.mark.timeout(90)

OPERATOR = Actor("U_ONCALL", "slack")


async def recon(
    rig: Rig, *, chain: bool = True, full: bool = True, ignore: tuple[str, ...] = ()
) -> ReconRun:
    return await run_reconciliation(
        rig.pool,
        RpcChainLookup(rig.rpc) if chain else None,
        now=datetime.now(UTC),
        actor=OPERATOR,
        pending_sla=timedelta(hours=1),
        expiry_grace=GRACE,
        payment=rig.services.payment,
        full=full,
        ignore_signatures=ignore,
    )


def kinds(run: ReconRun) -> list[str]:
    return sorted(f.kind.value for f in run.findings)


async def chain_facts(rig: Rig, run: ReconRun) -> dict[str, Any]:
    after = await rig.pool.fetchval(
        "SELECT after FROM audit_log WHERE action = 'recon.run' AND subject = $1",
        f"recon_run:{run.id}",
    )
    facts: dict[str, Any] = after["chain"]
    return facts


async def pay_treasury(rig: Rig, wallet: Wallet, amount: int, recipient: str) -> str:
    """A plain transfer of the mint (no reference, no memo) from `wallet` to `recipient`."""
    intent = {
        "token_program": rig.info.token_program,
        "mint": rig.info.mint,
        "recipient": recipient,
        "amount": str(amount),
        "reference": rig.info.mint,  # unused: with_reference=False
    }
    signature = await wallet.pay(intent, decimals=rig.info.decimals, with_reference=False)
    status = await wallet.wait_finalized(signature)
    assert status["err"] is None, status
    return signature


async def test_payments_credited_by_the_watcher_tie_to_zero_drift(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    for credits in (2, 5):
        await rig.pay(await rig.intent("ines", credits=credits))
    assert (await watch.poll(rig.services, rig.rpc)).credited == 2

    run = await recon(rig)

    assert run.findings == []
    assert (run.zero_drift, run.drift_tokens, run.chain_checked) == (True, 0, True)
    facts = await chain_facts(rig, run)
    assert facts["source"] == "watcher"
    assert facts["balance"]["compared"] is True
    assert facts["balance"]["on_chain"] == facts["balance"]["expected"]


async def test_a_top_up_ties_to_zero_drift_with_every_part_credited(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("ines", credits=5)
    first = intent.amount * 60 // 100
    await rig.pay(intent, amount=first)
    await watch.poll(rig.services, rig.rpc)
    await rig.pay(intent, amount=intent.amount - first)
    assert (await watch.poll(rig.services, rig.rpc)).credited == 1

    run = await recon(rig)

    assert [(f.kind.value, f.severity.value) for f in run.findings] == [
        ("failed_then_succeeded", "info")  # the short part, counted in the credit
    ]
    assert "counted in the top-up" in run.findings[0].detail
    assert run.zero_drift


async def test_a_transfer_to_the_treasury_without_an_intent_is_a_finding(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    signature = await pay_treasury(rig, rig.wallet, 777, rig.info.treasury_owner)
    await watch.poll(rig.services, rig.rpc)

    run = await recon(rig)

    assert kinds(run) == ["unmatched_payment"]
    [f] = run.findings
    assert (f.signatures, f.tokens) == ((signature,), 777)
    assert "recorded by the watcher" in f.detail
    assert run.drift_tokens == 777
    again = await recon(rig, full=False)
    assert again.new_findings == []
    assert [x.fingerprint for x in again.findings] == [f.fingerprint]


async def test_a_second_payment_of_a_confirmed_intent_is_an_uncredited_inflow(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    intent = await rig.intent("jonas", credits=3)
    first = await rig.pay(intent)
    again = await rig.pay(intent, amount=intent.amount + 1)  # the wallet pays again
    await watch.poll(rig.services, rig.rpc)

    run = await recon(rig)

    assert kinds(run) == ["uncredited_inflow"]
    [f] = run.findings
    assert (f.signatures, f.intent_ids, f.user_ids) == ((again,), (str(intent.id),), ("jonas",))
    assert f.tokens == intent.amount + 1
    assert f"CONFIRMED by {first}" in f.detail
    assert run.drift_tokens == intent.amount + 1


async def test_a_transfer_out_of_the_treasury_is_a_finding_until_an_incident_explains_it(
    rig: Rig,
) -> None:
    await watch.poll(rig.services, rig.rpc)
    await rig.pay(await rig.intent("kira", credits=4))
    async with aiohttp.ClientSession() as session:
        treasury = Wallet(rig.info.rpc_url, rig.info.treasury_keypair(), session)
        await treasury.call("requestAirdrop", [rig.info.treasury_owner, 1_000_000_000])
        out = await pay_treasury(rig, treasury, 1_500, str(rig.info.payer_keypair().pubkey()))
    await watch.poll(rig.services, rig.rpc)

    run = await recon(rig)

    assert kinds(run) == ["treasury_outflow"]
    [f] = run.findings
    assert (f.signatures, f.tokens, f.severity.value) == ((out,), -1_500, "warning")
    assert run.drift_tokens == 0  # the books hold it: the balance ties
    assert not run.zero_drift  # but someone moved treasury funds
    async with rig.pool.acquire() as conn:
        now = datetime.now(UTC)
        await incidents.open_incident(conn, OPERATOR, "treasury sweep", now=now)
        await incidents.add_note(conn, OPERATOR, f"cold storage transfer {out}", now=now)
        await incidents.close_incident(
            conn,
            OPERATOR,
            Closeout("planned sweep", "none", "recorded", "sweeps announced first"),
            now=now,
        )

    after = await recon(rig, full=False)

    assert [x.fingerprint for x in after.resolved_findings] == [f.fingerprint]
    assert after.zero_drift


async def test_tokens_added_behind_the_watchers_back_are_balance_drift(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    await rig.pay(await rig.intent("lena", credits=2))
    await watch.poll(rig.services, rig.rpc)
    balance, _ = await rig.rpc.get_token_account_balance(rig.info.treasury_token_account)
    await rig.wallet.call(
        "surfnet_setTokenAccount",
        [
            rig.info.treasury_owner,
            rig.info.mint,
            {"amount": balance + 1_000},
            rig.info.token_program,
        ],
    )

    run = await recon(rig)

    assert kinds(run) == ["treasury_balance_drift"]
    [f] = run.findings
    assert f.tokens == 1_000
    cursor = await watch.cursor(rig.pool, rig.info.treasury_token_account)
    assert cursor is not None
    assert f.signatures == (cursor.signature,)
    assert run.drift_tokens == 1_000

    # a payment the watcher has not read yet: the balance cannot be compared, and the drift
    # found before stays open as it was (neither resolved nor made worse)
    await rig.pay(await rig.intent("lena", credits=1))
    behind = await recon(rig, full=False)
    facts = await chain_facts(rig, behind)
    assert facts["balance"]["compared"] is False
    assert facts["balance"]["unchecked"].startswith("watcher behind")
    assert behind.resolved_findings == []
    assert [(x.fingerprint, x.tokens) for x in behind.findings] == [(f.fingerprint, 1_000)]


async def test_a_watcher_behind_is_not_drift(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    await rig.pay(await rig.intent("mona", credits=2))  # nobody polled since

    run = await recon(rig)

    assert run.findings == []
    assert run.zero_drift
    assert (await chain_facts(rig, run))["balance"]["compared"] is False


async def test_before_the_watcher_runs_the_windowed_look_is_kept(rig: Rig) -> None:
    signature = await pay_treasury(rig, rig.wallet, 321, rig.info.treasury_owner)

    run = await recon(rig)

    assert kinds(run) == ["unmatched_payment"]
    assert run.findings[0].signatures == (signature,)
    assert (await chain_facts(rig, run))["source"] == "window"


async def test_the_smoke_payment_recorded_by_the_watcher_is_ignored(rig: Rig) -> None:
    await watch.poll(rig.services, rig.rpc)
    smoke = await pay_treasury(rig, rig.wallet, 55, rig.info.treasury_owner)
    await watch.poll(rig.services, rig.rpc)

    assert kinds(await recon(rig)) == ["unmatched_payment"]
    run = await recon(rig, ignore=(smoke,))

    assert run.findings == []
    assert run.zero_drift
