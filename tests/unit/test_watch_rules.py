"""The treasury watcher's pure decisions: what a flow is, what binds it, in which order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from core.chain.transfers import ParsedTransaction, TokenBalanceChange
from core.watch import flow_of, intent_ids_in, new_signatures
from core.watch.rules import lag_slots

TREASURY = "TreasuryTokenAccount1111111111111111111111"
MINT = "Mint111111111111111111111111111111111111111"
OTHER_MINT = "OtherMint11111111111111111111111111111111"
PAYER = "Payer11111111111111111111111111111111111111"
PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"


def change(account: str, delta: int, mint: str = MINT) -> TokenBalanceChange:
    return TokenBalanceChange(account, "owner", mint, PROGRAM, 6, delta)


def tx(
    *changes: TokenBalanceChange, err: object = None, memos: tuple[str, ...] = ()
) -> ParsedTransaction:
    return ParsedTransaction(
        signatures=("sig1",),
        fee_payer=PAYER,
        account_keys=(PAYER, TREASURY, "Ref1111111111111111111111111111111111111111"),
        slot=42,
        block_time=1_767_225_600,
        err=err,
        memos=memos,
        token_changes=changes,
    )


@pytest.mark.parametrize(
    ("name", "transaction", "amount"),
    [
        ("a plain inflow", tx(change(TREASURY, 1_000), change("payer-ata", -1_000)), 1_000),
        ("an outflow", tx(change(TREASURY, -250)), -250),
        (
            "in and out in one transaction: the net change",
            tx(change(TREASURY, 900), change(TREASURY, -400)),
            500,
        ),
        (
            "another mint moved into the treasury: no flow",
            tx(change(TREASURY, 5, OTHER_MINT)),
            None,
        ),
        ("only other accounts changed", tx(change("elsewhere", 7)), None),
        ("a zero change", tx(change(TREASURY, 0)), None),
        ("a failed transaction moved nothing", tx(change(TREASURY, 10), err={"x": 1}), None),
    ],
)
def test_a_flow_is_the_net_change_of_the_treasury_in_its_mint(
    name: str, transaction: ParsedTransaction, amount: int | None
) -> None:
    flow = flow_of(transaction, TREASURY, MINT)
    assert (None if flow is None else flow.amount) == amount, name


def test_a_flow_carries_what_binds_it_and_when() -> None:
    flow = flow_of(tx(change(TREASURY, 3), memos=("hello",)), TREASURY, MINT)
    assert flow is not None
    assert flow.inflow
    assert flow.payer == PAYER
    assert flow.slot == 42
    assert flow.block_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert flow.memos == ("hello",)
    assert TREASURY in flow.account_keys


def test_intent_ids_are_read_from_memos_once_each() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    memos = (f"payops {a}", str(a).upper(), f"{b} and junk", "no id here", "1234-not-a-uuid")
    assert intent_ids_in(memos) == (a, b)
    assert intent_ids_in(()) == ()


def test_new_signatures_are_oldest_first_once_each_with_failures_marked() -> None:
    newest_page = [{"signature": "s5"}, {"signature": "s4", "err": {"e": 1}}, {"signature": "s3"}]
    older_page = [
        {"signature": "s3"},
        {"signature": "s2"},
        {},
        {"signature": 7},
        {"signature": "s1"},
    ]
    assert new_signatures([newest_page, older_page]) == [
        ("s1", False),
        ("s2", False),
        ("s3", False),
        ("s4", True),
        ("s5", False),
    ]
    assert new_signatures([]) == []


@pytest.mark.parametrize(
    ("cursor", "chain", "lag"), [(None, 100, 0), (90, 100, 10), (100, 100, 0), (105, 100, 0)]
)
def test_lag_is_slots_behind_the_chain(cursor: int | None, chain: int, lag: int) -> None:
    assert lag_slots(cursor, chain) == lag
