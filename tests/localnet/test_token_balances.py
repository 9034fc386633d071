"""Pre/post token balances, computed from account snapshots, say what moved."""

from __future__ import annotations

import base64
from typing import Any

from solders.message import Message, MessageV0
from solders.transaction import VersionedTransaction

from localnet.lookup_tables import create_lookup_table
from localnet.tokens import associated_token_address, build_payment, payment_instructions
from tests.localnet.conftest import Net, new_key


def _by_account(answer: dict[str, Any], which: str) -> dict[str, tuple[str, str, int]]:
    """{token account: (owner, mint, raw amount)} from pre- or postTokenBalances."""
    keys = answer["transaction"]["message"]["accountKeys"]
    addresses = [k["pubkey"] if isinstance(k, dict) else k for k in keys]
    loaded = answer["meta"].get("loadedAddresses") or {"writable": [], "readonly": []}
    addresses += loaded["writable"] + loaded["readonly"]
    return {
        addresses[b["accountIndex"]]: (b["owner"], b["mint"], int(b["uiTokenAmount"]["amount"]))
        for b in answer["meta"][which]
    }


async def _transaction(net: Net, signature: object, encoding: str = "jsonParsed") -> Any:
    config = {"encoding": encoding, "maxSupportedTransactionVersion": 0}
    return await net.result("getTransaction", [str(signature), config])


async def test_payment_into_account_created_in_same_tx_has_no_pre_balance(net: Net) -> None:
    recipient = new_key()
    signature = await net.pay(2_500, recipient=recipient, create_recipient_account=True)
    answer = await _transaction(net, signature)
    new_account = str(associated_token_address(recipient, net.mint))
    pre = _by_account(answer, "preTokenBalances")
    post = _by_account(answer, "postTokenBalances")
    assert new_account not in pre
    assert post[new_account] == (str(recipient), net.info.mint, 2_500)
    payer_account = net.info.payer_token_account
    assert pre[payer_account][2] - post[payer_account][2] == 2_500
    entry = next(b for b in answer["meta"]["postTokenBalances"] if b["owner"] == str(recipient))
    assert entry["programId"] == net.info.token_program
    assert entry["uiTokenAmount"] == {
        "amount": "2500",
        "decimals": 6,
        "uiAmount": 0.0025,
        "uiAmountString": "0.0025",
    }


async def test_zero_balance_shows_null_ui_amount_like_a_node(net: Net) -> None:
    signature = await net.pay(1)
    answer = await _transaction(net, signature, "json")
    treasury_pre = next(
        b for b in answer["meta"]["preTokenBalances"] if b["owner"] == net.info.treasury_owner
    )
    assert treasury_pre["uiTokenAmount"] == {
        "amount": "0",
        "decimals": 6,
        "uiAmount": None,
        "uiAmountString": "0",
    }


async def test_transfer_fee_is_withheld_so_treasury_receives_less(fee_net: Net) -> None:
    signature = await fee_net.pay(100_000)
    answer = await _transaction(fee_net, signature)
    treasury = fee_net.info.treasury_token_account
    received = (
        _by_account(answer, "postTokenBalances")[treasury][2]
        - _by_account(answer, "preTokenBalances")[treasury][2]
    )
    assert received == 99_000  # 1% withheld in the treasury account
    parsed = await fee_net.result(
        "getAccountInfo", [treasury, {"encoding": "jsonParsed", "commitment": "confirmed"}]
    )
    info = parsed["value"]["data"]["parsed"]["info"]
    assert {"extension": "transferFeeAmount", "state": {"withheldAmount": 1_000}} in info[
        "extensions"
    ]
    assert parsed["value"]["data"]["program"] == "spl-token-2022"


async def test_failed_transfer_lands_with_err_and_charges_the_fee(net: Net) -> None:
    signature = await net.pay(net.info.payer_token_balance + 1, skip_preflight=True)
    answer = await _transaction(net, signature, "json")
    meta = answer["meta"]
    assert meta["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert meta["status"] == {"Err": meta["err"]}
    assert meta["preBalances"][0] - meta["postBalances"][0] == meta["fee"] == 5_000
    assert _by_account(answer, "preTokenBalances") == _by_account(answer, "postTokenBalances")
    assert any("insufficient funds" in line for line in meta["logMessages"])
    statuses = await net.result("getSignatureStatuses", [[str(signature)]])
    assert statuses["value"][0]["err"] == meta["err"]


async def test_preflight_failure_has_the_node_error_shape(net: Net) -> None:
    blockhash = net.chain.latest_blockhash()[0]
    tx = build_payment(
        net.info.payer_keypair(),
        blockhash,
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=net.info.payer_token_balance + 1,
        decimals=6,
    )
    encoded = base64.b64encode(bytes(tx)).decode()
    answer = await net.call("sendTransaction", [encoded, {"encoding": "base64"}])
    error = answer["error"]
    assert error["code"] == -32002
    assert error["message"] == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert error["data"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert error["data"]["logs"]
    statuses = await net.result("getSignatureStatuses", [[str(tx.signatures[0])]])
    assert statuses["value"] == [None]  # preflight failures never land


async def test_v0_transaction_needs_max_supported_version(net: Net) -> None:
    signature = await net.pay(5)
    answer = await net.call("getTransaction", [str(signature), {"encoding": "json"}])
    assert answer["error"]["code"] == -32015
    assert '"maxSupportedTransactionVersion": 0' in answer["error"]["message"]


async def test_legacy_transaction_has_no_version_unless_asked(net: Net) -> None:
    payer = net.info.payer_keypair()
    ixs = payment_instructions(
        payer.pubkey(), mint=net.mint, recipient_owner=net.treasury, amount=4, decimals=6
    )
    message = Message.new_with_blockhash(ixs, payer.pubkey(), net.chain.latest_blockhash()[0])
    tx = VersionedTransaction(message, [payer])
    net.chain.process(tx)
    plain = await net.result("getTransaction", [str(tx.signatures[0]), "json"])
    assert "version" not in plain
    assert "addressTableLookups" not in plain["transaction"]["message"]
    asked = await _transaction(net, tx.signatures[0])
    assert asked["version"] == "legacy"
    assert asked["transaction"]["message"]["addressTableLookups"] is None


async def test_loaded_destination_resolves_through_lookup_table(net: Net) -> None:
    payer = net.info.payer_keypair()
    table = create_lookup_table(net.chain, payer, [net.treasury_account])
    ixs = payment_instructions(
        payer.pubkey(), mint=net.mint, recipient_owner=net.treasury, amount=77, decimals=6
    )
    blockhash = net.chain.latest_blockhash()[0]
    tx = VersionedTransaction(
        MessageV0.try_compile(payer.pubkey(), ixs, [table], blockhash), [payer]
    )
    net.chain.process(tx)
    as_json = await _transaction(net, tx.signatures[0], "json")
    assert as_json["meta"]["loadedAddresses"]["writable"] == [net.info.treasury_token_account]
    post = _by_account(as_json, "postTokenBalances")
    assert post[net.info.treasury_token_account][2] == 77
    parsed = await _transaction(net, tx.signatures[0])
    sources = {k["pubkey"]: k["source"] for k in parsed["transaction"]["message"]["accountKeys"]}
    assert sources[net.info.treasury_token_account] == "lookupTable"
    assert "loadedAddresses" not in parsed["meta"]
    found = await net.result("getSignaturesForAddress", [net.info.treasury_token_account])
    assert str(tx.signatures[0]) in [s["signature"] for s in found]
