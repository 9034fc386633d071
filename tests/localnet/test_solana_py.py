"""solana-py's AsyncClient (strict solders parsers) understands every answer of the local chain,
after a real Solana Pay style payment: transferChecked with a reference key, plus a memo."""

from __future__ import annotations

from typing import Any

from solana.rpc.models import TokenAccountOpts, TxOpts
from solders.account_decoder import ParsedAccount
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    ParsedInstruction,
    UiParsedMessage,
    UiTransaction,
)

from localnet.tokens import build_payment
from tests.localnet.conftest import Net, new_key


async def test_get_transaction_parses_in_every_encoding(net: Net) -> None:
    reference = new_key()
    signature = await net.pay(1_500, references=[reference], memo="intent-42")
    for encoding in ("json", "jsonParsed", "base64"):
        answer = await net.client.get_transaction(
            signature, encoding=encoding, max_supported_transaction_version=0
        )
        assert isinstance(answer.value, EncodedConfirmedTransactionWithStatusMeta), encoding
        meta = answer.value.transaction.meta
        assert meta is not None
        assert meta.err is None
        assert answer.value.block_time is not None
        assert answer.value.transaction.version == 0


async def test_json_parsed_transaction_names_the_transfer_and_the_memo(net: Net) -> None:
    signature = await net.pay(1_500, references=[new_key()], memo="intent-42")
    answer = await net.client.get_transaction(
        signature, encoding="jsonParsed", max_supported_transaction_version=0
    )
    assert answer.value is not None
    ui_transaction = answer.value.transaction.transaction
    assert isinstance(ui_transaction, UiTransaction)
    message = ui_transaction.message
    assert isinstance(message, UiParsedMessage)
    parsed = [ix for ix in message.instructions if isinstance(ix, ParsedInstruction)]
    assert [ix.program for ix in parsed] == ["spl-token", "spl-memo"]
    transfer: Any = parsed[0].parsed
    assert transfer["type"] == "transferChecked"
    assert transfer["info"]["tokenAmount"]["amount"] == "1500"
    memo: Any = parsed[1].parsed
    assert memo == "intent-42"


async def test_signature_statuses_and_signatures_for_address(net: Net) -> None:
    reference = new_key()
    signature = await net.pay(10, references=[reference], memo="m")
    unknown = Keypair().sign_message(b"never sent")
    statuses = await net.client.get_signature_statuses([signature, unknown])
    status, missing = statuses.value
    assert missing is None
    assert status is not None
    assert status.err is None
    assert str(status.confirmation_status) == "TransactionConfirmationStatus.Finalized"
    found = await net.client.get_signatures_for_address(reference, limit=10)
    assert [s.signature for s in found.value] == [signature]
    assert found.value[0].memo == "[1] m"


async def test_blockhash_slot_height_epoch_and_block_time(net: Net) -> None:
    blockhash = await net.client.get_latest_blockhash()
    slot = (await net.client.get_slot()).value
    assert blockhash.value.last_valid_block_height >= slot + 150 - 1
    assert (await net.client.get_block_height()).value >= slot
    epoch = (await net.client.get_epoch_info()).value
    assert epoch.absolute_slot >= slot
    block_time = (await net.client.get_block_time(slot)).value
    assert block_time is not None
    assert block_time > 1_600_000_000


async def test_accounts_balances_and_token_queries(net: Net) -> None:
    payer = net.info.payer_keypair().pubkey()
    assert (await net.client.get_balance(payer)).value == net.info.payer_lamports
    info = await net.client.get_account_info(net.treasury_account)
    assert info.value is not None
    assert len(info.value.data) == 165
    parsed = await net.client.get_account_info_json_parsed(net.treasury_account)
    assert parsed.value is not None
    data = parsed.value.data
    assert isinstance(data, ParsedAccount)
    assert data.program == "spl-token"
    account: Any = data.parsed
    assert account["info"]["owner"] == net.info.treasury_owner
    balance = await net.client.get_token_account_balance(net.treasury_account)
    assert balance.value.amount == "0"
    assert balance.value.decimals == 6
    supply = await net.client.get_token_supply(net.mint)
    assert supply.value.amount == str(net.info.payer_token_balance)
    owned = await net.client.get_token_accounts_by_owner_json_parsed(
        payer, TokenAccountOpts(mint=net.mint)
    )
    assert [str(a.pubkey) for a in owned.value] == [net.info.payer_token_account]
    both = await net.client.get_multiple_accounts([payer, new_key()])
    assert both.value[0] is not None
    assert both.value[1] is None
    rent = await net.client.get_minimum_balance_for_rent_exemption(165)
    assert rent.value == 2_039_280
    assert (await net.client.get_version()).value.solana_core
    assert (await net.client.get_transaction_count()).value >= 1


async def test_airdrop_lands_as_a_transaction(net: Net) -> None:
    wallet = new_key()
    signature = (await net.client.request_airdrop(wallet, 5_000_000)).value
    assert (await net.client.get_balance(wallet)).value == 5_000_000
    landed = await net.client.get_transaction(signature, max_supported_transaction_version=0)
    assert landed.value is not None


async def test_simulate_reports_balances_and_accounts(net: Net) -> None:
    blockhash = (await net.client.get_latest_blockhash()).value.blockhash
    tx = build_payment(
        net.info.payer_keypair(),
        blockhash,
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=7,
        decimals=6,
    )
    simulated = await net.client.simulate_transaction(
        tx, inner_instructions=True, accounts_addresses=[net.treasury_account]
    )
    value = simulated.value
    assert isinstance(value, RpcSimulateTransactionResult)
    assert value.err is None
    assert value.units_consumed
    assert value.post_token_balances is not None
    received = [
        b.ui_token_amount.amount
        for b in value.post_token_balances
        if str(b.owner) == net.info.treasury_owner
    ]
    assert received == ["7"]
    assert value.accounts is not None
    assert value.accounts[0] is not None
    # Nothing landed: the treasury still holds nothing.
    balance = await net.client.get_token_account_balance(net.treasury_account)
    assert balance.value.amount == "0"


async def test_send_raw_transaction_with_confirmation(net: Net) -> None:
    latest = (await net.client.get_latest_blockhash()).value
    tx = build_payment(
        net.info.payer_keypair(),
        latest.blockhash,
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=3,
        decimals=6,
    )
    opts = TxOpts(skip_confirmation=False, last_valid_block_height=latest.last_valid_block_height)
    sent = await net.client.send_raw_transaction(bytes(tx), opts)
    assert sent.value == tx.signatures[0]


async def test_simulate_can_replace_an_unknown_blockhash(net: Net) -> None:
    tx = build_payment(
        net.info.payer_keypair(),
        Hash.new_unique(),  # never handed out by this chain
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=1,
        decimals=6,
    )
    stale = await net.client.simulate_transaction(tx)
    assert stale.value.err is not None
    replaced = await net.client.simulate_transaction(tx, replace_recent_blockhash=True)
    assert replaced.value.err is None
    assert replaced.value.replacement_blockhash is not None


async def test_fee_genesis_and_ledger_queries(net: Net) -> None:
    latest = (await net.client.get_latest_blockhash()).value.blockhash
    tx = build_payment(
        net.info.payer_keypair(),
        latest,
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=1,
        decimals=6,
    )
    message = tx.message
    assert isinstance(message, MessageV0)
    assert (await net.client.get_fee_for_message(message)).value == 5_000
    assert (await net.client.get_genesis_hash()).value != latest
    first = (await net.client.get_first_available_block()).value
    assert first <= (await net.client.get_slot()).value
