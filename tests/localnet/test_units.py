"""The local chain's pure pieces: amounts, base58, layouts, instruction parsing, errors, clock."""

from __future__ import annotations

import struct

import pytest
from base58 import b58encode
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionErrorType,
)

from localnet.chain import LocalChain
from localnet.clock import ChainClock, TimeTravelError
from localnet.encoding import account_data_json
from localnet.errors import RpcError, describe_error, error_json
from localnet.layouts import (
    parse_mint,
    parse_token_account,
    patch_token_account,
    ui_amount_string,
    ui_token_amount,
)
from localnet.params import decode_transaction
from localnet.parsed import parse_instruction
from localnet.programs import (
    COMPUTE_BUDGET_PROGRAM_ID,
    MEMO_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
)
from localnet.tokens import (
    TransferFee,
    create_mint,
    mint_to,
    transfer_checked_instruction,
)


@pytest.mark.parametrize(
    ("amount", "decimals", "text"),
    [
        (0, 6, "0"),
        (1, 6, "0.000001"),
        (1_000, 6, "0.001"),
        (1_000_000, 6, "1"),
        (1_234_500, 6, "1.2345"),
        (42, 0, "42"),
        (3_170_652_014_400_000, 5, "31706520144"),
        (2**64 - 1, 9, "18446744073.709551615"),
    ],
)
def test_ui_amount_string_trims_like_a_node(amount: int, decimals: int, text: str) -> None:
    assert ui_amount_string(amount, decimals) == text


def test_ui_token_amount_is_null_for_zero_only_in_balances() -> None:
    assert ui_token_amount(0, 6, null_zero=True)["uiAmount"] is None
    assert ui_token_amount(0, 6)["uiAmount"] == 0.0
    assert ui_token_amount(1_500, 6)["uiAmount"] == 0.0015


@pytest.mark.parametrize(
    ("raw", "text"), [(b"", ""), (b"\0\0\x01", "112"), (b"hello world", "StV1DL6CwTryKyV")]
)
def test_account_data_in_binary_and_base58_encodings_is_base58_text(raw: bytes, text: str) -> None:
    account = Account(lamports=1, data=raw, owner=SYSTEM_PROGRAM_ID)
    assert account_data_json(account, "binary", lambda _: None) == text
    assert account_data_json(account, "base58", lambda _: None) == [text, "base58"]


def _signed_transfer() -> VersionedTransaction:
    payer = Keypair()
    ix = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=1)
    )
    return VersionedTransaction(
        Message.new_with_blockhash([ix], payer.pubkey(), Hash.default()), [payer]
    )


def test_base58_sent_transaction_decodes_to_the_same_transaction() -> None:
    tx = _signed_transfer()
    assert decode_transaction(b58encode(bytes(tx)).decode(), "base58") == tx


@pytest.mark.parametrize("text", ["0OIl", "é", "1 1"])
def test_base58_sent_transaction_rejects_characters_outside_the_alphabet(text: str) -> None:
    with pytest.raises(RpcError, match="invalid base58 encoding"):
        decode_transaction(text, "base58")


def _token_account(mint: Pubkey, owner: Pubkey, amount: int, state: int = 1) -> bytes:
    data = bytearray(165)
    data[0:32] = bytes(mint)
    data[32:64] = bytes(owner)
    struct.pack_into("<Q", data, 64, amount)
    data[108] = state
    return bytes(data)


def test_token_account_layout_is_read_and_patched() -> None:
    mint, owner, delegate = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    data = _token_account(mint, owner, 77)
    state = parse_token_account(TOKEN_PROGRAM_ID, data)
    assert state is not None
    assert (state.mint, state.owner, state.amount, state.state) == (mint, owner, 77, "initialized")
    patched = patch_token_account(data, amount=5, delegate=delegate, delegated_amount=2)
    again = parse_token_account(TOKEN_PROGRAM_ID, patched)
    assert again is not None
    assert (again.amount, again.delegate, again.delegated_amount) == (5, delegate, 2)
    assert parse_token_account(SYSTEM_PROGRAM_ID, data) is None
    assert parse_token_account(TOKEN_PROGRAM_ID, _token_account(mint, owner, 1, state=0)) is None
    assert parse_mint(TOKEN_PROGRAM_ID, data) is None


def test_solana_pay_reference_reads_as_multisig_signer_like_a_node() -> None:
    source, mint, dest, owner, reference = (Pubkey.new_unique() for _ in range(5))
    ix = transfer_checked_instruction(source, mint, dest, owner, 1_000, 6, references=[reference])
    parsed = parse_instruction(ix.program_id, [a.pubkey for a in ix.accounts], ix.data, None)
    info = parsed["parsed"]["info"]
    assert parsed["parsed"]["type"] == "transferChecked"
    assert info["multisigAuthority"] == str(owner)
    assert info["signers"] == [str(reference)]
    assert "authority" not in info
    plain = transfer_checked_instruction(source, mint, dest, owner, 1_000, 6)
    parsed = parse_instruction(plain.program_id, [a.pubkey for a in plain.accounts], plain.data, 2)
    assert parsed["parsed"]["info"]["authority"] == str(owner)
    assert parsed["stackHeight"] == 2


def test_unknown_programs_and_instructions_are_partially_decoded() -> None:
    budget = parse_instruction(COMPUTE_BUDGET_PROGRAM_ID, [], bytes([2, 64, 66, 15, 0]), None)
    assert budget == {
        "accounts": [],
        "data": "FjL4FH",  # base58 of the instruction bytes
        "programId": str(COMPUTE_BUDGET_PROGRAM_ID),
        "stackHeight": None,
    }
    approve = parse_instruction(TOKEN_PROGRAM_ID, [Pubkey.new_unique()] * 3, bytes([4]) * 9, None)
    assert "parsed" not in approve
    memo = parse_instruction(MEMO_PROGRAM_ID, [], "héllo".encode(), None)
    assert memo["parsed"] == "héllo"
    assert memo["program"] == "spl-memo"


def test_system_transfer_is_parsed() -> None:
    source, dest = Pubkey.new_unique(), Pubkey.new_unique()
    data = struct.pack("<IQ", 2, 5_000)
    parsed = parse_instruction(SYSTEM_PROGRAM_ID, [source, dest], data, None)
    assert parsed["parsed"] == {
        "info": {"source": str(source), "destination": str(dest), "lamports": 5_000},
        "type": "transfer",
    }


@pytest.mark.parametrize(
    ("err", "as_json", "words"),
    [
        (
            TransactionErrorInstructionError(0, InstructionErrorCustom(1)),
            {"InstructionError": [0, {"Custom": 1}]},
            "Error processing Instruction 0: custom program error: 0x1",
        ),
        (
            TransactionErrorInstructionError(2, InstructionErrorFieldless.InsufficientFunds),
            {"InstructionError": [2, "InsufficientFunds"]},
            "Error processing Instruction 2: insufficient funds for instruction",
        ),
        (TransactionErrorFieldless.BlockhashNotFound, "BlockhashNotFound", "Blockhash not found"),
        (
            TransactionErrorInsufficientFundsForRent(1),
            {"InsufficientFundsForRent": {"account_index": 1}},
            "Transaction results in an account (1) with insufficient funds for rent",
        ),
    ],
)
def test_transaction_errors_in_node_json_and_words(
    err: TransactionErrorType, as_json: object, words: str
) -> None:
    assert error_json(err) == as_json
    assert describe_error(err) == words


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_clock_slots_follow_time_and_blockhashes_expire() -> None:
    wall = FakeWall()
    clock = ChainClock(start_slot=1_000, wall=wall)
    blockhash = clock.blockhash()
    assert clock.slot == 1_000
    wall.now += 0.4 * 10
    assert clock.slot == 1_010
    assert clock.block_time(1_010) == 1_700_000_004
    assert clock.is_blockhash_valid(blockhash)
    wall.now += 0.4 * 140
    assert clock.slot == 1_150
    assert clock.is_blockhash_valid(blockhash)  # valid through block height 1000 + 150
    wall.now += 0.4
    assert not clock.is_blockhash_valid(blockhash)
    assert not clock.is_blockhash_valid(clock.slot_hash(clock.slot))  # never handed out


def test_clock_travels_forward_only() -> None:
    wall = FakeWall()
    clock = ChainClock(start_slot=0, wall=wall)
    clock.travel_to_ms(int(wall.now * 1000) + 86_400_000)
    assert clock.slot == 216_000
    assert clock.block_time(clock.slot) == int(wall.now) + 86_400
    with pytest.raises(TimeTravelError):
        clock.travel_to_slot(10)
    clock.travel_to_epoch(3)
    assert clock.slot == 3 * 432_000
    assert clock.epoch_info(0)["slotIndex"] == 0


def test_transfer_fee_rounds_up_and_caps() -> None:
    fee = TransferFee(basis_points=100, maximum_fee=5_000)
    assert fee.fee_for(100_000) == 1_000
    assert fee.fee_for(150) == 2
    assert fee.fee_for(10**9) == 5_000


def test_repeated_identical_transactions_land_in_later_slots() -> None:
    wall = FakeWall()
    chain = LocalChain(wall=wall)
    authority = Keypair()
    chain.airdrop(authority.pubkey(), 10**10)
    mint = create_mint(chain, authority, decimals=2)
    owner = Keypair().pubkey()
    first = chain.transaction_count
    mint_to(chain, authority, mint, owner, 5)
    mint_to(chain, authority, mint, owner, 5)  # same instructions, same blockhash otherwise
    landed = chain.signatures_for_address(owner)
    assert chain.transaction_count == first + 2
    assert landed[0].slot == landed[1].slot + 1
    assert landed[0].block_time >= landed[1].block_time
