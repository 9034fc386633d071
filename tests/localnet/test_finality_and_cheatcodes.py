"""Commitment levels with finality held back, Surfpool's cheatcodes, and the JSON-RPC envelope."""

from __future__ import annotations

import base64
import time

from base58 import b58encode
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from localnet.tokens import associated_token_address, build_payment
from tests.localnet.conftest import Net, new_key


async def test_held_back_finality_hides_tx_at_finalized_only(net: Net) -> None:
    hold = await net.result("localnet_holdFinality")
    reference = new_key()
    signature = await net.pay(10, references=[reference])
    config = {"encoding": "json", "maxSupportedTransactionVersion": 0}
    finalized = await net.result("getTransaction", [str(signature), config])
    confirmed = await net.result(
        "getTransaction", [str(signature), {**config, "commitment": "confirmed"}]
    )
    assert finalized is None
    assert confirmed["slot"] > hold["finalizedSlot"]
    status = (await net.result("getSignatureStatuses", [[str(signature)]]))["value"][0]
    assert status["confirmationStatus"] == "confirmed"
    assert isinstance(status["confirmations"], int)
    assert await net.result("getSignaturesForAddress", [str(reference)]) == []
    seen = await net.result(
        "getSignaturesForAddress", [str(reference), {"commitment": "confirmed"}]
    )
    assert [s["confirmationStatus"] for s in seen] == ["confirmed"]
    assert await net.result("getSlot", [{"commitment": "finalized"}]) == hold["finalizedSlot"]
    await net.result("localnet_releaseFinality")
    assert (await net.result("getTransaction", [str(signature), config]))["slot"] == confirmed[
        "slot"
    ]
    status = (await net.result("getSignatureStatuses", [[str(signature)]]))["value"][0]
    assert status["confirmationStatus"] == "finalized"
    assert status["confirmations"] is None


async def test_processed_commitment_is_refused_for_get_transaction(net: Net) -> None:
    signature = await net.pay(1)
    answer = await net.call("getTransaction", [str(signature), {"commitment": "processed"}])
    assert answer["error"] == {
        "code": -32602,
        "message": "Method does not support commitment below `confirmed`",
    }


async def test_signatures_for_address_pages_newest_first(net: Net) -> None:
    reference = new_key()
    sent = [await net.pay(n + 1, references=[reference]) for n in range(3)]
    newest_first = [str(s) for s in reversed(sent)]
    listed = await net.result("getSignaturesForAddress", [str(reference)])
    assert [s["signature"] for s in listed] == newest_first
    limited = await net.result("getSignaturesForAddress", [str(reference), {"limit": 1}])
    assert [s["signature"] for s in limited] == newest_first[:1]
    before = await net.result(
        "getSignaturesForAddress", [str(reference), {"before": newest_first[0]}]
    )
    assert [s["signature"] for s in before] == newest_first[1:]
    until = await net.result(
        "getSignaturesForAddress", [str(reference), {"until": newest_first[2]}]
    )
    assert [s["signature"] for s in until] == newest_first[:2]


async def test_set_token_account_funds_a_wallet_that_can_then_pay(net: Net) -> None:
    wallet = Keypair()
    owner = str(wallet.pubkey())
    await net.result("surfnet_setAccount", [owner, {"lamports": 1_000_000_000}])
    done = await net.result(
        "surfnet_setTokenAccount",
        [owner, net.info.mint, {"amount": 5_000_000}, net.info.token_program],
    )
    assert done["value"] is None
    assert set(done["context"]) == {"slot", "apiVersion"}
    account = associated_token_address(wallet.pubkey(), net.mint)
    balance = await net.result("getTokenAccountBalance", [str(account)])
    assert balance["value"]["amount"] == "5000000"
    tx = build_payment(
        wallet,
        net.chain.latest_blockhash()[0],
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=1_234_567,
        decimals=6,
    )
    sent = await net.client.send_raw_transaction(bytes(tx))
    assert sent.value == tx.signatures[0]
    balance = await net.result("getTokenAccountBalance", [str(account)])
    assert balance["value"]["amount"] == str(5_000_000 - 1_234_567)


async def test_set_token_account_creates_token_2022_account_with_extensions(fee_net: Net) -> None:
    owner = new_key()
    await fee_net.result(
        "surfnet_setTokenAccount",
        [str(owner), fee_net.info.mint, {"amount": 42, "state": "frozen"}],
    )
    account = associated_token_address(owner, fee_net.mint, fee_net.token_program)
    parsed = await fee_net.result("getAccountInfo", [str(account), {"encoding": "jsonParsed"}])
    info = parsed["value"]["data"]["parsed"]["info"]
    assert info["state"] == "frozen"
    assert info["tokenAmount"]["amount"] == "42"
    assert [e["extension"] for e in info["extensions"]] == ["immutableOwner", "transferFeeAmount"]


async def test_set_account_writes_hex_data(net: Net) -> None:
    address = str(new_key())
    owner = str(new_key())
    await net.result(
        "surfnet_setAccount",
        [address, {"lamports": 5, "data": "deadbeef", "owner": owner, "rentEpoch": 0}],
    )
    account = await net.result("getAccountInfo", [address, {"encoding": "base64"}])
    assert account["value"]["data"] == ["3q2+7w==", "base64"]
    assert account["value"]["owner"] == owner
    assert account["value"]["lamports"] == 5


async def test_time_travel_moves_block_time_forward_only(net: Net) -> None:
    target_ms = int((time.time() + 7 * 86_400) * 1000)
    epoch_info = await net.result("surfnet_timeTravel", [{"absoluteTimestamp": target_ms}])
    assert set(epoch_info) == {
        "absoluteSlot",
        "blockHeight",
        "epoch",
        "slotIndex",
        "slotsInEpoch",
        "transactionCount",
    }
    signature = await net.pay(3)
    landed = await net.result(
        "getTransaction", [str(signature), {"maxSupportedTransactionVersion": 0}]
    )
    # A block's time is the start of its slot, which may begin up to a slot (400 ms) before
    # the instant travelled to: never earlier than that.
    assert landed["blockTime"] >= (target_ms - 400) // 1000
    assert landed["blockTime"] <= time.time() + 8 * 86_400
    assert landed["slot"] >= epoch_info["absoluteSlot"]
    assert await net.result("getBlockTime", [landed["slot"]]) == landed["blockTime"]
    back = await net.call("surfnet_timeTravel", [{"absoluteTimestamp": target_ms - 60_000}])
    assert back["error"]["code"] == -32602
    slot = await net.result("getSlot")
    moved = await net.result("surfnet_timeTravel", [{"absoluteSlot": slot + 1_000}])
    assert moved["absoluteSlot"] == slot + 1_000
    later = await net.result("surfnet_timeTravel", [{"absoluteEpoch": moved["epoch"] + 1}])
    assert later["slotIndex"] == 0


async def test_old_blockhash_expires_after_time_travel(net: Net) -> None:
    blockhash = net.chain.latest_blockhash()[0]
    slot = await net.result("getSlot")
    await net.result("surfnet_timeTravel", [{"absoluteSlot": slot + 151}])
    assert (await net.result("isBlockhashValid", [str(blockhash)]))["value"] is False
    tx = build_payment(
        net.info.payer_keypair(),
        blockhash,
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=1,
        decimals=6,
    )
    answer = await net.call(
        "sendTransaction", [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}]
    )
    assert answer["error"]["code"] == -32002
    assert answer["error"]["data"]["err"] == "BlockhashNotFound"


async def test_base58_send_and_signature_failure(net: Net) -> None:
    tx = build_payment(
        net.info.payer_keypair(),
        net.chain.latest_blockhash()[0],
        mint=net.mint,
        recipient_owner=net.treasury,
        amount=2,
        decimals=6,
    )
    assert await net.result("sendTransaction", [b58encode(bytes(tx)).decode()]) == str(
        tx.signatures[0]
    )
    forged = bytearray(bytes(tx))
    forged[1] ^= 0xFF  # corrupt the first signature
    answer = await net.call("sendTransaction", [b58encode(bytes(forged)).decode()])
    assert answer["error"] == {
        "code": -32003,
        "message": "Transaction signature verification failure",
    }


async def test_unknown_method_batches_and_bad_json(net: Net) -> None:
    answer = await net.call("getNothing")
    assert answer == {
        "jsonrpc": "2.0",
        "error": {"code": -32601, "message": "Method not found"},
        "id": 1,
    }
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
        {"jsonrpc": "2.0", "id": "two", "method": "getSlot", "params": []},
        {"jsonrpc": "2.0", "method": "getHealth"},  # a notification: no answer
    ]
    async with net.session.post(net.info.rpc_url, json=batch) as response:
        answers = await response.json()
    assert [a["id"] for a in answers] == [1, "two"]
    assert answers[0]["result"] == "ok"
    async with net.session.post(net.info.rpc_url, data=b"{nope") as response:
        assert (await response.json())["error"]["code"] == -32700
    async with net.session.get(net.info.rpc_url + "/health") as response:
        assert await response.text() == "ok"


async def test_get_balance_of_unknown_account_is_zero(net: Net) -> None:
    answer = await net.result("getBalance", [str(Pubkey.new_unique())])
    assert answer["value"] == 0
    assert answer["context"]["apiVersion"]
