"""A saved local chain comes back with its accounts, transactions, failures and clock."""

from __future__ import annotations

from pathlib import Path

from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from localnet.chain import LocalChain
from localnet.landing import TransactionFailed
from localnet.persist import load_chain, save_chain
from localnet.server import seed_chain


def test_a_saved_chain_comes_back_as_it_was(tmp_path: Path) -> None:
    chain = LocalChain()
    info = seed_chain(chain)
    payer = info.payer_keypair()
    # A transaction that lands with an instruction error: its error must survive too.
    too_much = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Pubkey.default(), lamports=2**63)
    )
    try:
        chain.execute([too_much], payer)
    except TransactionFailed as failed:
        failed_error = failed.execution.err
    assert failed_error is not None
    state = tmp_path / "chain.state"

    save_chain(chain, state, {"seeded": info.to_json()})
    loaded = load_chain(state)

    assert loaded is not None
    again, meta = loaded
    assert meta == {"seeded": info.to_json()}
    assert again.transaction_count == chain.transaction_count
    for address in (info.payer_token_account, info.treasury_token_account, info.mint):
        key = Pubkey.from_string(address)
        assert again.get_account(key) == chain.get_account(key)
    assert [r.signature for r in again.signatures_for_address(Pubkey.from_string(info.mint))] == [
        r.signature for r in chain.signatures_for_address(Pubkey.from_string(info.mint))
    ]
    assert any(r.execution.err == failed_error for r in again.records())
    assert again.slot >= chain.slot
    # The restored chain keeps working: its faucet and its history go on.
    again.airdrop(payer.pubkey(), 1)
    assert again.transaction_count == chain.transaction_count + 1


def test_nothing_saved_is_none(tmp_path: Path) -> None:
    assert load_chain(tmp_path / "chain.state") is None
