"""parse_transaction on the 12 real getTransaction responses, synthetic ones and broken ones."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from core.chain.encoding import MalformedTransaction, b58decode
from core.chain.transfers import (
    MEMO_PROGRAM_V1,
    MEMO_PROGRAM_V2,
    ParsedTransaction,
    TokenBalanceChange,
    parse_transaction,
    unwrap_envelope,
)
from core.chain.verdict import TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from tests.fixtures import load_solana_fixture, solana_fixture_names

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
DEVNET_USDC = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
WSOL = "So11111111111111111111111111111111111111112"
JUP = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"
HELP = "HeLp6NuQkmYB4pYWo2zYs22mESHXPQYzXbB8n4V98jwC"

KEYAPP_SPL = "keyapp_validGetSendSPLTransactionResponse_jsonParsed.json"
KEYAPP_SOL = "keyapp_validGetSendSOLTransactionResponse_jsonParsed.json"
V0_ALT_BASE64 = "cordialsys_v0_alt_inner_usdc_base64.json"
USDC_BASE64 = "cordialsys_usdc_transferChecked_0.0002_base64.json"
DEVNET_JSON = "metamask_devnet_usdc_transfer.json"
SELF_TRANSFER = "metamask_jup_transferChecked_to_self_legacy.json"


def repeat_token_account(result: dict[str, Any]) -> None:
    """The first token account listed again at a new index, with a balance there."""
    keys = result["transaction"]["message"]["accountKeys"]
    entry = copy.deepcopy(result["meta"]["postTokenBalances"][0])
    keys.append(copy.deepcopy(keys[entry["accountIndex"]]))
    entry["accountIndex"] = len(keys) - 1
    result["meta"]["postTokenBalances"].append(entry)


def load_raw(name: str) -> dict[str, Any]:
    """A fixture file as stored (envelope or bare result); fails when it is missing."""
    raw: dict[str, Any] = load_solana_fixture(name)
    return raw


def load_result(name: str) -> dict[str, Any]:
    """A fresh, mutable copy of a fixture's `result` object."""
    result: dict[str, Any] = copy.deepcopy(load_raw(name).get("result", load_raw(name)))
    return result


@cache
def parsed(name: str) -> ParsedTransaction:
    return parse_transaction(load_raw(name))


def change(
    account: str, owner: str, mint: str, delta: int, decimals: int, program: str | None
) -> TokenBalanceChange:
    """A TokenBalanceChange in the README's column order."""
    return TokenBalanceChange(account, owner, mint, program, decimals, delta)


@dataclass(frozen=True)
class Facts:
    """One '## file' block of the fixtures README."""

    name: str
    err: object
    slot: int
    block_time: int
    version: int | str | None
    changes: tuple[TokenBalanceChange, ...] = ()


# Transcribed from tests/fixtures/solana/README.md, "Facts to test against".
README_FACTS = [
    Facts(
        "cordialsys_bonk_transfer_unchecked_base64.json",
        err=None,
        slot=207121234,
        block_time=1690153132,
        version=None,
        changes=(
            change(
                "JDPR4RP95CdtwLcjqe3E4cVthzCmkASfs4yamN9MZyPR",
                "AC5RDfQFmDS1deWZos921JfqscXdByf8BKHs5ACWjtW2",
                BONK,
                -3170652014400000,
                5,
                TOKEN_PROGRAM,
            ),
            change(
                "DiQuYy9JmNnDRxUaRMAazcQ7yqVep6CrZbcbP2yBpuXY",
                "GtxgnRiSfBzahR9xb7hvYbWq3Uzez7hpCz2BJbCLxKdq",
                BONK,
                3170652014400000,
                5,
                TOKEN_PROGRAM,
            ),
        ),
    ),
    Facts(
        USDC_BASE64,
        err=None,
        slot=115305244,
        block_time=1645121566,
        version=None,
        changes=(
            change(
                "6Yg9GttAiHjbHMoiomBuGBDULP7HxQyez45dEiR9CJqw",
                "91t4uSdtBiftqsB24W2fRXFCXjUyc6xY3WMGFedAaTHh",
                DEVNET_USDC,
                200000,
                6,
                None,
            ),
            change(
                "DvSgNMRxVSMBpLp4hZeBrmQo8ZRFne72actTZ3PYE3AA",
                "Hzn3n914JaSpnxo5mBbmuCDmGL6mxWN9Ac2HzEXFSGtb",
                DEVNET_USDC,
                -200000,
                6,
                None,
            ),
        ),
    ),
    Facts(
        V0_ALT_BASE64,
        err=None,
        slot=334182963,
        block_time=1744942223,
        version=0,
        changes=(
            change(
                "E6GtXLPfi351xWpxXMBnqQUaHvQNkuz8Z5wfnmuRD81G",
                "41fkvu8LhJDqkF325GTz6HuQRvZmCXVtYoYWPZeVCdux",
                USDC,
                -4591313938,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "917TbE5DbzFzzGimezHfqBJWAsy4SL3UU5BzJNcVhXJ",
                "3CznQLcJWpyNKrYyq7qCvZsHn19csgB8g5wvisx4us47",
                USDC,
                4608152451,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "BT72p68Jp5eJUpuHThxSoeTRS9p4upTM8969X79GeQRF",
                "EM1GQEerfKsrT6eJbehX4nwV3MdTCdjvhUYVytFAuEVg",
                USDC,
                -16838513,
                6,
                TOKEN_PROGRAM,
            ),
        ),
    ),
    Facts(KEYAPP_SOL, err=None, slot=185471096, block_time=1680146043, version=None),
    Facts(
        KEYAPP_SPL,
        err=None,
        slot=184930610,
        block_time=1679899845,
        version=None,
        changes=(
            change(
                "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh",
                "3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui",
                USDC,
                1000,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "9rB2Poc468mPpY9WMUmaqEPsvJah8SpPB8bKqAjjXp5H",
                "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t",
                USDC,
                -1000,
                6,
                TOKEN_PROGRAM,
            ),
        ),
    ),
    Facts(
        DEVNET_JSON,
        err=None,
        slot=353107528,
        block_time=1736502537,
        version=0,
        changes=(
            change(
                "644PJ6UW8e4gQpjKdBVd4MCYasWjSECKjqd2qzdeAJY6",
                "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe",
                DEVNET_USDC,
                10000,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "G23tQHsbQuh3yqUBoyXDn3TwqEbbbUHAHEeUSvJaVRtA",
                "BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP",
                DEVNET_USDC,
                -10000,
                6,
                TOKEN_PROGRAM,
            ),
        ),
    ),
    Facts(
        "metamask_failed_swap_custom6001_v0_alt.json",
        err={"InstructionError": [2, {"Custom": 6001}]},
        slot=326686187,
        block_time=1741949141,
        version=0,
    ),
    Facts(
        "metamask_failed_swap_v0_alt_token2022_err.json",
        err={"InstructionError": [6, {"Custom": 1}]},
        slot=339492409,
        block_time=1747040326,
        version=0,
    ),
    Facts(SELF_TRANSFER, err=None, slot=327785925, block_time=1742387710, version="legacy"),
    Facts(
        "metamask_jupiter_swap_token2022_inner_v0_alt.json",
        err=None,
        slot=335404896,
        block_time=1745425114,
        version=0,
        changes=(
            change(
                "2w6WUGXVeUPeGpJTUSNu4btbpMkFtmjrQgpKi149it7K",
                "ExcBWu8fGPdJiaF1b1z3iEef38sjQJks8xvj6M85pPY6",
                USDT,
                4239,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "5M3c33wKLoPRBUN24dCp9xrug6RvgB57ccQAwsmHBtvn",
                "4RyuSgGdYeE7Qd4eKsuauTevWRreSfGScYqaygMEJXSq",
                HELP,
                21898077,
                9,
                TOKEN_2022_PROGRAM,
            ),
            change(
                "7CoLodcm9h4EAFKpcPbT34yk3MkpeWjsBqXVidfbrfQ7",
                "ExcBWu8fGPdJiaF1b1z3iEef38sjQJks8xvj6M85pPY6",
                WSOL,
                -28168,
                9,
                TOKEN_PROGRAM,
            ),
            change(
                "BfrpfwfvvRbswT5jPqy4Ey9iek9PsBCXssF4hCa4UZ7u",
                "4RyuSgGdYeE7Qd4eKsuauTevWRreSfGScYqaygMEJXSq",
                USDT,
                -4239,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "C9JRr8XMCatQ9kSii8VNHLMHQWfcA1pHCzhR5M1xAYUv",
                "FQT9SSwEZ6UUQxsmTzgt5JzjrS4M5zm13M1QiYF8TEo6",
                HELP,
                -21898077,
                9,
                TOKEN_2022_PROGRAM,
            ),
        ),
    ),
    Facts(
        "metamask_jupiter_swap_usdc_jup_v0_alt_inner.json",
        err=None,
        slot=327561062,
        block_time=1742297902,
        version=0,
        changes=(
            change(
                "3QE7UkXbrHxEbi373Gp5hwPQwJaAVoLvwYBRz5jwaGxt",
                "DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa",
                USDC,
                -1100000,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "BWqMUT5533X8M4DM3AQvFeAQd451urcVQu3zi6uVxWtT",
                "DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa",
                JUP,
                2143812,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "J8gt2jBUi6DW6gdUdm1fkP9oGN4xXwPdQbCZkkN78R3Z",
                "9yj3zvLS3fDMqi1F8zhkaWfq8TZpZWHe6cz1Sgt7djXf",
                USDC,
                9350,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "8cjeuVV3KQ9k8RqW1JUyCfey2TDAhuo7f4hPDMeGfxv",
                "8cjeuVV3KQ9k8RqW1JUyCfey2TDAhuo7f4hPDMeGfxv",
                USDC,
                1090650,
                6,
                TOKEN_PROGRAM,
            ),
            change(
                "HWcEXBF7Gu2HnjBPfrSYpUKYrV4bBrkMJRWnb5Qn1zUe",
                "HWcEXBF7Gu2HnjBPfrSYpUKYrV4bBrkMJRWnb5Qn1zUe",
                JUP,
                -2143812,
                6,
                TOKEN_PROGRAM,
            ),
        ),
    ),
    Facts(
        "metamask_token2022_transfer_unchecked_create_ata.json",
        err=None,
        slot=336671683,
        block_time=1745927033,
        version=0,
        changes=(
            change(
                "5k4KRS1HVR5DaQhPzY3P9mRBw1k3TK7fug23utRcqgk1",
                "BYh4CfuGDvFMKaZp3RPmkw9y6qg3sWukA2TiGJDeLKZi",
                HELP,
                10000000,
                9,
                TOKEN_2022_PROGRAM,
            ),
            change(
                "BDAg5uPZ6ktjPZuKoktHLYbJLw6KqRTiHtJoeG9GDyLY",
                "EMmTjuHsYCYX7vgPcQ2QVbNwYAwcvGoSMCEaHKc19DdE",
                HELP,
                -10000000,
                9,
                TOKEN_2022_PROGRAM,
            ),
        ),
    ),
]


@dataclass(frozen=True)
class Shape:
    """Facts beyond the README, read off each response by hand (base64 ones via solders)."""

    name: str
    signature: str
    signature_count: int
    fee_payer: str
    key_count: int  # static + loaded
    memos: tuple[str, ...] = ()


SHAPES = [
    Shape(
        "cordialsys_bonk_transfer_unchecked_base64.json",
        "66iwZvSCQc1br36ddj7keyLtSXb3yuPzDdMSk3qpkYJUAiiy3thmpzut1WzEWjnubr8oQV19wkhvH3X9j45kPZzx",
        2,
        "AC5RDfQFmDS1deWZos921JfqscXdByf8BKHs5ACWjtW2",
        8,
    ),
    Shape(
        USDC_BASE64,
        "5ZrG8iS4RxLXDRQEWkAoddWHzkS1fA1m6ppxaAekgGzskhcFqjkw1ZaFCsLorbhY5V4YUUkjE3SLY2JNLyVanxrM",
        1,
        "Hzn3n914JaSpnxo5mBbmuCDmGL6mxWN9Ac2HzEXFSGtb",
        5,
    ),
    Shape(
        V0_ALT_BASE64,
        "2aoWC4uMT9zznC5m3ALE45Rb9YtmD6sNCabSgz4vACC9fKmwjaTooKVsn7mgoJ2Er3pa2xi8rbLcPzogNVwV5KSv",
        1,
        "12VFrc1dFynPzs4HBRdRoMKNm1jca2S2uhaNKCkdffwy",
        7 + 8,
    ),
    Shape(
        KEYAPP_SOL,
        "5QMfuqThWSMMpLCRe3tk7qn7iSwWKfJV8EvD1ZPvyqAWa7Z2JftZ4rPq8YCxCwzSykX7dMkDB8RrovQMoL9ZZWKY",
        2,
        "FG4Y3yX4AAchp1HvNZ7LfzFTewF2f6nDoMDCohTFrdpT",
        5,
        ("transfer",),
    ),
    Shape(
        KEYAPP_SPL,
        "2S2rTZjaqzxYRw9mnqzwtyqitKtSsnE8GVqLn1KrD5R2YpXZnU4GdjppsgfSAbrzJfaqadfi8CtrqEBy588WVQ3E",
        2,
        "FG4Y3yX4AAchp1HvNZ7LfzFTewF2f6nDoMDCohTFrdpT",
        11,
        ("transfer",),
    ),
    Shape(
        DEVNET_JSON,
        "3Zj5XkvE1Uec1frjue6SK2ND2cqhKPvPkZ1ZFPwo2v9iL4NX4b4WWG1wPNEQdnJJU8sVx7MMHjSH1HxoR21vEjoV",
        1,
        "BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP",
        4,
    ),
    Shape(
        "metamask_failed_swap_custom6001_v0_alt.json",
        "58FymkjJUeSFGeEdaUQZbhHP5tdwwvbRR8BfKfuEgfYznqDqsApRBk8LCtiKny9EjQZBNi5NxGvLjR6F3gY6rxn1",
        1,
        "9az5xpAV8KJ2Q2Jb1ZvBpvfUa5Cj4dZirbgvfPF5XsB8",
        9 + 9 + 7,
    ),
    Shape(
        "metamask_failed_swap_v0_alt_token2022_err.json",
        "43VK3TtYjN21VG13f2EPvNJxmML38GB8QbTDVtFifzeDW3LQpmLtFdLjERAKwy3k4RUe4Hizmdrj4Nyjm5vYKDBx",
        1,
        "8A4AptCThfbuknsbteHgGKXczfJpfjuVA9SLTSGaaLGC",
        20 + 9 + 11,
    ),
    Shape(
        SELF_TRANSFER,
        "4zvFGpqjihSXgHdw6ymHA8hVfyHURNPwASz4FS4c9wADCMSooojx8k42EUuhoDiGGM73SixUcNXafgnuM5dnKHfH",
        1,
        "DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa",
        5,
    ),
    Shape(
        "metamask_jupiter_swap_token2022_inner_v0_alt.json",
        "JiqYGkWcYu8GxPZsMdXDnA8tkZvHnHVmNuKr4JYBErm4rgQWssdHCkbe8MzwwNGndyvyNYaaY5vvMhUMPNiQX9u",
        1,
        "FQT9SSwEZ6UUQxsmTzgt5JzjrS4M5zm13M1QiYF8TEo6",
        32 + 5,
    ),
    Shape(
        "metamask_jupiter_swap_usdc_jup_v0_alt_inner.json",
        "5LuTa5k9UvgM2eJknVUD9MjfcmcTP7nvFrCedU8d7ZLXCHbrrwqhXDQYTSfncm1wTSNFPZj3Y4cRkWC8CLG6Zcvh",
        1,
        "DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa",
        9 + 5 + 3,
    ),
    Shape(
        "metamask_token2022_transfer_unchecked_create_ata.json",
        "4G24SgaZ3gU92HAB8xwSVg6WXS7NcGtUpHMnQ5RTwBw9bG5x8y6co5TzqqPXbExovY2NAuPjE9393TCHFZVhS8K9",
        1,
        "EMmTjuHsYCYX7vgPcQ2QVbNwYAwcvGoSMCEaHKc19DdE",
        9,
    ),
]


def test_every_fixture_in_the_folder_is_covered() -> None:
    on_disk = set(solana_fixture_names())
    assert on_disk == {facts.name for facts in README_FACTS} == {shape.name for shape in SHAPES}


@pytest.mark.parametrize("facts", README_FACTS, ids=lambda facts: facts.name)
def test_parse_matches_the_readme_facts(facts: Facts) -> None:
    tx = parsed(facts.name)

    assert tx.err == facts.err
    assert tx.slot == facts.slot
    assert tx.block_time == facts.block_time
    assert tx.version == facts.version
    # The README lists only accounts whose balance moved; zero deltas are kept by the parser.
    moved = sorted((c for c in tx.token_changes if c.delta != 0), key=lambda c: c.account)
    assert moved == sorted(facts.changes, key=lambda c: c.account)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
def test_parse_reads_signatures_fee_payer_keys_and_memos(shape: Shape) -> None:
    tx = parsed(shape.name)

    assert tx.signature == tx.signatures[0] == shape.signature
    assert len(tx.signatures) == shape.signature_count
    assert tx.fee_payer == tx.account_keys[0] == shape.fee_payer
    assert len(tx.account_keys) == shape.key_count
    assert tx.memos == shape.memos


@pytest.mark.parametrize("name", [shape.name for shape in SHAPES])
def test_parse_accepts_the_envelope_and_the_bare_result_alike(name: str) -> None:
    raw = load_raw(name)
    envelope = raw if "result" in raw else {"jsonrpc": "2.0", "result": raw, "id": 1}

    assert parse_transaction(envelope) == parse_transaction(envelope["result"])
    assert unwrap_envelope(envelope) is envelope["result"]
    assert unwrap_envelope(envelope["result"]) is envelope["result"]


@pytest.mark.parametrize(
    "name", [V0_ALT_BASE64, USDC_BASE64, "cordialsys_bonk_transfer_unchecked_base64.json"]
)
def test_parse_of_base64_matches_what_solders_verifies(name: str) -> None:
    wire = base64.b64decode(load_raw(name)["transaction"][0])
    tx = VersionedTransaction.from_bytes(wire)
    assert all(tx.verify_with_results())  # the capture is a real signed transaction

    assert parsed(name).signatures == tuple(str(sig) for sig in tx.signatures)


def test_parse_appends_loaded_writable_then_readonly_keys_after_static_keys() -> None:
    loaded = load_result(V0_ALT_BASE64)["meta"]["loadedAddresses"]
    tx = parsed(V0_ALT_BASE64)

    assert tx.account_keys[7:] == (*loaded["writable"], *loaded["readonly"])
    assert USDC in tx.account_keys[7:]  # the mint itself is a loaded key


def test_parse_keeps_zero_delta_accounts_of_a_self_transfer() -> None:
    (only,) = parsed(SELF_TRANSFER).token_changes

    assert only.account == "BWqMUT5533X8M4DM3AQvFeAQd451urcVQu3zi6uVxWtT"
    assert (only.mint, only.delta) == (JUP, 0)


@pytest.mark.parametrize(
    "text",
    [
        "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        "11111111111111111111111111111111",
        "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",
    ],
)
def test_b58decode_agrees_with_solders(text: str) -> None:
    assert b58decode(text, "test") == bytes(Pubkey.from_string(text))


@pytest.mark.parametrize(
    ("text", "raw"), [("", b""), ("1", b"\x00"), ("11", b"\x00\x00"), ("2", b"\x01")]
)
def test_b58decode_keeps_leading_zero_bytes(text: str, raw: bytes) -> None:
    assert b58decode(text, "test") == raw


# -- synthetic responses -------------------------------------------------------------------------


def b58encode(raw: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number, out = int.from_bytes(raw, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        out = alphabet[digit] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + out


def balance(index: int, amount: int, *, mint: str = USDC, owner: str = "wallet") -> dict[str, Any]:
    return {
        "accountIndex": index,
        "mint": mint,
        "owner": owner,
        "programId": TOKEN_PROGRAM,
        "uiTokenAmount": {"amount": str(amount), "decimals": 6},
    }


def json_encoded(**meta: Any) -> dict[str, Any]:
    """A version 0 json-encoded response: 3 static keys, 1 loaded writable, 1 loaded readonly
    (the v1 memo program, so memos must resolve through the loaded keys)."""
    return {
        "slot": 7,
        "blockTime": None,
        "version": 0,
        "meta": {
            "err": None,
            "loadedAddresses": {"writable": ["loaded-account"], "readonly": [MEMO_PROGRAM_V1]},
            "preTokenBalances": [],
            "postTokenBalances": [],
            "innerInstructions": [],
            **meta,
        },
        "transaction": {
            "signatures": ["sig-1"],
            "message": {
                "accountKeys": ["payer", "treasury-ata", MEMO_PROGRAM_V2],
                "instructions": [
                    {"programIdIndex": 2, "accounts": [], "data": b58encode(b"top level")},
                ],
            },
        },
    }


def test_parse_reads_memos_in_json_form_from_top_level_then_inner_instructions() -> None:
    inner = {"programIdIndex": 4, "accounts": [], "data": b58encode("intent pi_42 ✓".encode())}
    tx = parse_transaction(json_encoded(innerInstructions=[{"index": 0, "instructions": [inner]}]))

    assert tx.account_keys == (
        "payer",
        "treasury-ata",
        MEMO_PROGRAM_V2,
        "loaded-account",
        MEMO_PROGRAM_V1,
    )
    assert tx.memos == ("top level", "intent pi_42 ✓")
    assert tx.block_time is None


def test_parse_replaces_invalid_utf8_in_a_memo_rather_than_failing() -> None:
    inner = {"programIdIndex": 2, "accounts": [], "data": b58encode(b"pi_1\xff")}
    tx = parse_transaction(json_encoded(innerInstructions=[{"index": 0, "instructions": [inner]}]))

    assert tx.memos == ("top level", "pi_1\ufffd")


def test_parse_resolves_balances_through_loaded_keys() -> None:
    tx = parse_transaction(
        json_encoded(preTokenBalances=[balance(3, 5)], postTokenBalances=[balance(3, 7)])
    )

    assert tx.token_changes == (
        TokenBalanceChange("loaded-account", "wallet", USDC, TOKEN_PROGRAM, 6, 2),
    )


def test_parse_counts_a_missing_pre_or_post_entry_as_zero() -> None:
    tx = parse_transaction(
        json_encoded(preTokenBalances=[balance(0, 40)], postTokenBalances=[balance(1, 25)])
    )

    assert [(c.account, c.delta) for c in tx.token_changes] == [
        ("payer", -40),
        ("treasury-ata", 25),
    ]


def test_parse_splits_an_account_that_changed_owner_into_leaving_and_arriving() -> None:
    tx = parse_transaction(
        json_encoded(
            preTokenBalances=[balance(1, 10, owner="old-owner")],
            postTokenBalances=[balance(1, 30, owner="new-owner")],
        )
    )

    assert [(c.owner, c.delta) for c in tx.token_changes] == [("old-owner", -10), ("new-owner", 30)]


def test_parse_takes_jsonparsed_lookup_table_keys_inline() -> None:
    # jsonParsed v0 lists loaded keys in accountKeys (source=lookupTable), no loadedAddresses.
    def key(pubkey: str, source: str) -> dict[str, Any]:
        return {"pubkey": pubkey, "signer": False, "writable": True, "source": source}

    response = {
        "slot": 9,
        "blockTime": 1_700_000_000,
        "meta": {
            "err": None,
            "preTokenBalances": [],
            "postTokenBalances": [balance(1, 3)],
            "innerInstructions": [
                {
                    "index": 0,
                    "instructions": [
                        {"program": "spl-memo", "programId": MEMO_PROGRAM_V2, "parsed": "pi_9"}
                    ],
                }
            ],
        },
        "transaction": {
            "signatures": ["sig"],
            "message": {
                "accountKeys": [key("payer", "transaction"), key("from-table", "lookupTable")],
                "instructions": [],
            },
        },
    }
    tx = parse_transaction(response)

    assert tx.account_keys == ("payer", "from-table")
    assert tx.token_changes[0].account == "from-table"
    assert tx.memos == ("pi_9",)


# -- malformed responses -------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def set_amount(value: object) -> Mutation:
    return lambda r: r["meta"]["postTokenBalances"][0]["uiTokenAmount"].__setitem__("amount", value)


def corrupt_wire(r: dict[str, Any]) -> None:
    wire = base64.b64decode(r["transaction"][0])
    r["transaction"][0] = base64.b64encode(wire[: len(wire) // 2]).decode()


MALFORMED = [
    ("no meta", KEYAPP_SPL, lambda r: r.pop("meta"), "missing field 'meta'"),
    ("no err", KEYAPP_SPL, lambda r: r["meta"].pop("err"), "missing field 'err'"),
    ("no slot", KEYAPP_SPL, lambda r: r.pop("slot"), "missing field 'slot'"),
    ("slot as string", KEYAPP_SPL, lambda r: r.__setitem__("slot", "1"), "expected an integer"),
    ("negative slot", KEYAPP_SPL, lambda r: r.__setitem__("slot", -1), "outside"),
    ("slot as bool", KEYAPP_SPL, lambda r: r.__setitem__("slot", True), "expected an integer"),
    ("block time as float", KEYAPP_SPL, lambda r: r.__setitem__("blockTime", 1.5), "integer"),
    ("block time past 9999", KEYAPP_SPL, lambda r: r.__setitem__("blockTime", 10**12), "outside"),
    ("bad version", DEVNET_JSON, lambda r: r.__setitem__("version", "v9"), "version"),
    (
        "no pre balances",
        KEYAPP_SPL,
        lambda r: r["meta"].pop("preTokenBalances"),
        "missing field 'preTokenBalances'",
    ),
    ("decimal amount", KEYAPP_SPL, set_amount("1.5"), "not a raw u64 amount"),
    ("negative amount", KEYAPP_SPL, set_amount("-1"), "not a raw u64 amount"),
    ("empty amount", KEYAPP_SPL, set_amount(""), "not a raw u64 amount"),
    ("amount above u64", KEYAPP_SPL, set_amount(str(2**64)), "not a raw u64 amount"),
    ("amount as number", KEYAPP_SPL, set_amount(1000), "expected a string"),
    (
        "decimals as string",
        KEYAPP_SPL,
        lambda r: r["meta"]["postTokenBalances"][0]["uiTokenAmount"].__setitem__("decimals", "6"),
        "decimals: expected an integer",
    ),
    (
        "account index out of range",
        KEYAPP_SPL,
        lambda r: r["meta"]["postTokenBalances"][0].__setitem__("accountIndex", 11),
        "account index 11 out of range",
    ),
    (
        "account listed twice",
        KEYAPP_SPL,
        lambda r: r["meta"]["postTokenBalances"].append(r["meta"]["postTokenBalances"][0]),
        "listed twice",
    ),
    ("no owner", KEYAPP_SPL, lambda r: r["meta"]["postTokenBalances"][0].pop("owner"), "owner"),
    (
        "no account keys",
        KEYAPP_SPL,
        lambda r: r["transaction"]["message"].__setitem__("accountKeys", []),
        "accountKeys: empty",
    ),
    (
        "key without pubkey",
        KEYAPP_SPL,
        lambda r: r["transaction"]["message"]["accountKeys"][0].pop("pubkey"),
        "missing field 'pubkey'",
    ),
    (
        "no signatures",
        KEYAPP_SPL,
        lambda r: r["transaction"].__setitem__("signatures", []),
        "signatures: empty",
    ),
    (
        "program index out of range",
        DEVNET_JSON,
        lambda r: r["transaction"]["message"]["instructions"][0].__setitem__("programIdIndex", 99),
        "account index 99 out of range",
    ),
    (
        "inner group without instructions",
        KEYAPP_SPL,
        lambda r: r["meta"]["innerInstructions"][0].pop("instructions"),
        "missing field 'instructions'",
    ),
    (
        "memo without text or data",
        KEYAPP_SPL,
        lambda r: r["transaction"]["message"]["instructions"][-1].pop("parsed"),
        "neither text nor data",
    ),
    (
        "base64 with a bad character",
        USDC_BASE64,
        lambda r: r["transaction"].__setitem__(0, "!" + r["transaction"][0][1:]),
        "bad base64",
    ),
    ("truncated wire bytes", USDC_BASE64, corrupt_wire, "not a transaction"),
    (
        "base58 encoding",
        USDC_BASE64,
        lambda r: r["transaction"].__setitem__(1, "base58"),
        "unsupported encoding",
    ),
    (
        "loaded keys missing",
        V0_ALT_BASE64,
        lambda r: r["meta"]["loadedAddresses"]["writable"].pop(),
        "meta.loadedAddresses",
    ),
    ("empty result", KEYAPP_SPL, lambda r: r.clear(), "missing field 'meta'"),
    (
        "static account key repeated",
        KEYAPP_SPL,
        lambda r: r["transaction"]["message"]["accountKeys"].append(
            r["transaction"]["message"]["accountKeys"][1]
        ),
        "listed again at index",
    ),
    (
        "token account repeated under another index",
        KEYAPP_SPL,
        repeat_token_account,
        "listed again at index",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [pytest.param(name, mutate, message, id=case) for case, name, mutate, message in MALFORMED],
)
def test_parse_rejects_a_malformed_response_with_a_clear_message(
    name: str, mutate: Mutation, message: str
) -> None:
    result = load_result(name)
    mutate(result)

    with pytest.raises(MalformedTransaction, match=message):
        parse_transaction(result)


def test_parse_rejects_invalid_base58_memo_data() -> None:
    bad = {"programIdIndex": 2, "accounts": [], "data": "0OIl"}
    response = json_encoded()
    response["transaction"]["message"]["instructions"] = [bad]

    with pytest.raises(MalformedTransaction, match="not a base58 character"):
        parse_transaction(response)


@pytest.mark.parametrize(
    "response",
    [None, [], "result", 42, {"jsonrpc": "2.0", "result": None, "id": 1}],
)
def test_parse_rejects_what_is_not_a_transaction_object(response: object) -> None:
    with pytest.raises(MalformedTransaction, match="result: expected an object"):
        parse_transaction(response)


@pytest.mark.parametrize(
    "envelope", [{"jsonrpc": "2.0", "id": 1}, {"error": {"code": -32005, "message": "busy"}}]
)
def test_parse_rejects_an_envelope_without_result(envelope: dict[str, Any]) -> None:
    with pytest.raises(MalformedTransaction, match="envelope without result"):
        parse_transaction(envelope)


def test_non_ascii_base64_transaction_is_malformed_not_a_crash() -> None:
    # base64.b64decode raises a plain ValueError (not binascii.Error) for non-ASCII text.
    result = {"slot": 1, "meta": {"err": None}, "transaction": ["é" * 12, "base64"]}
    with pytest.raises(MalformedTransaction, match="base64"):
        parse_transaction(result)
