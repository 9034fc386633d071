"""Our `getTransaction` answers have the JSON structure of real nodes' answers: the recursive set
of key paths is compared with the captured mainnet/devnet responses in the shared fixtures.

Two rules, per encoding:
- nothing missing: every key path that all real answers of that encoding share (leaving out
  what depends on the content: a parsed instruction's `info`, the error's own shape) is in ours;
- nothing invented: every key path of ours appears in some real answer, or is one a current
  node adds that the older captures predate (`stackHeight` on parsed instructions,
  `returnData` when a program returns data).
"""

from __future__ import annotations

from typing import Any, Final

from solders.keypair import Keypair
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from localnet.lookup_tables import create_lookup_table
from localnet.tokens import (
    associated_token_address,
    create_associated_token_account_instruction,
    transfer_checked_instruction,
)
from tests.fixtures import load_solana_fixture, solana_fixture_names
from tests.localnet.conftest import Net, new_key

_CONTENT_SPECIFIC: Final = (".parsed.info.", ".meta.err.", ".meta.status.Err")
_NEWER_NODE_KEYS: Final = frozenset(
    {
        ".transaction.message.instructions[].stackHeight",
        ".meta.innerInstructions[].instructions[].stackHeight",
        ".meta.returnData",
        ".meta.returnData.programId",
        ".meta.returnData.data",
    }
)


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path in `value`; list items share one path (`[]`)."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}"
            paths.add(path)
            paths |= key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, f"{prefix}[]")
    return paths


def _structural(paths: set[str]) -> set[str]:
    return {p for p in paths if not any(marker in p for marker in _CONTENT_SPECIFIC)}


def _encoding(result: dict[str, Any]) -> str:
    transaction = result["transaction"]
    if isinstance(transaction, list):
        return "base64"
    first_key = transaction["message"]["accountKeys"][0]
    return "jsonParsed" if isinstance(first_key, dict) else "json"


def _as_node_writes_it(paths: set[str]) -> set[str]:
    # The MetaMask captures spell the lookup field `readableIndexes`; agave's
    # UiAddressTableLookup (and solders, and every node) write `readonlyIndexes`.
    return {p.replace(".readableIndexes", ".readonlyIndexes") for p in paths}


def _real_answers() -> list[tuple[str, dict[str, Any]]]:
    answers = []
    for name in solana_fixture_names():
        data = load_solana_fixture(name)
        result = data["result"] if "jsonrpc" in data else data
        answers.append((name, result))
    return answers


def _check(ours: dict[str, Any], encoding: str, *, failed: bool = False) -> None:
    answers = _real_answers()
    same = [
        _as_node_writes_it(key_paths(r))
        for _, r in answers
        if _encoding(r) == encoding and (r["meta"]["err"] is not None) == failed
    ]
    assert same, f"no real {encoding} answer to compare with"
    everywhere = set.union(*(_as_node_writes_it(key_paths(r)) for _, r in answers))
    # Outside `transaction`, every encoding has the same keys; jsonParsed moves
    # `meta.loadedAddresses` into the account keys.
    allowed = set.union(*same) | {p for p in everywhere if not p.startswith(".transaction")}
    if encoding == "jsonParsed":
        allowed = {p for p in allowed if not p.startswith(".meta.loadedAddresses")}
    allowed |= _NEWER_NODE_KEYS
    mine = _structural(key_paths(ours))
    missing = _structural(set.intersection(*same)) - mine
    invented = mine - _structural(allowed)
    assert not missing, f"{encoding}: keys every real answer has but ours lacks: {missing}"
    assert not invented, f"{encoding}: keys no real answer has: {invented}"


async def _get(net: Net, signature: object, encoding: str) -> dict[str, Any]:
    config = {"encoding": encoding, "maxSupportedTransactionVersion": 0}
    result: dict[str, Any] = await net.result("getTransaction", [str(signature), config])
    return result


async def test_json_parsed_answer_is_shaped_like_a_real_one(net: Net) -> None:
    signature = await net.pay(
        1_000, recipient=new_key(), memo="shape", create_recipient_account=True
    )
    _check(await _get(net, signature, "jsonParsed"), "jsonParsed")


async def test_base64_answer_is_shaped_like_a_real_one(net: Net) -> None:
    signature = await net.pay(
        1_000, recipient=new_key(), memo="shape", create_recipient_account=True
    )
    _check(await _get(net, signature, "base64"), "base64")


async def test_json_answer_is_shaped_like_a_real_one(net: Net) -> None:
    signature = await net.pay(1_000, memo="shape")
    _check(await _get(net, signature, "json"), "json")


async def test_parsed_transfer_checked_has_the_real_fields(net: Net) -> None:
    answers = dict(_real_answers())
    real = answers["keyapp_validGetSendSPLTransactionResponse_jsonParsed.json"]
    real_info = real["transaction"]["message"]["instructions"][1]["parsed"]["info"]
    signature = await net.pay(1_000, memo="fields")
    ours = await _get(net, signature, "jsonParsed")
    info = ours["transaction"]["message"]["instructions"][0]["parsed"]["info"]
    assert key_paths(info) == key_paths(real_info)


async def test_failed_v0_answer_with_lookup_table_is_shaped_like_a_real_one(net: Net) -> None:
    """Like the captured failed swaps: version 0, a lookup table, inner instructions, then an
    instruction failing with a custom program error."""
    payer = net.info.payer_keypair()
    recipient = Keypair().pubkey()
    destination = associated_token_address(recipient, net.mint)
    table = create_lookup_table(net.chain, payer, [recipient, destination])
    source = associated_token_address(payer.pubkey(), net.mint)
    too_much = net.info.payer_token_balance + 1
    ixs = [
        create_associated_token_account_instruction(payer.pubkey(), recipient, net.mint),
        transfer_checked_instruction(source, net.mint, destination, payer.pubkey(), too_much, 6),
    ]
    blockhash = net.chain.latest_blockhash()[0]
    tx = VersionedTransaction(
        MessageV0.try_compile(payer.pubkey(), ixs, [table], blockhash), [payer]
    )
    net.chain.process(tx)
    ours = await _get(net, tx.signatures[0], "json")
    assert ours["meta"]["err"] == {"InstructionError": [1, {"Custom": 1}]}
    loaded = {"writable": [str(destination)], "readonly": [str(recipient)]}
    assert ours["meta"]["loadedAddresses"] == loaded
    _check(ours, "json", failed=True)
